-- Maintenance keeps the previous month's partition as well as the current and premade ones.
-- A batch is sampled before it is sent: rows dated in the last seconds of a month arrive in the
-- first seconds of the next (an agent's upload interval, a backlog sent after an outage). On a
-- project created, or a partition set rebuilt, in the first days of a month, the previous month had
-- no partition and those rows were refused with 23514. Retention still drops old months as before.

create or replace function fleetbench.maintain_metrics_partitions(p_now timestamptz default now())
returns table (action text, partition_name text)
language plpgsql security definer set search_path = '' as $$
declare
    v_current date := date_trunc('month', p_now at time zone 'UTC')::date;
    v_premake int := (select value::int from fleetbench.settings where key = 'metrics_premake_months');
    v_retention int := (select value::int from fleetbench.settings where key = 'metrics_retention_months');
    v_child record;
    v_month date;
    v_existed boolean;
begin
    for i in -1 .. v_premake loop
        v_month := (v_current + make_interval(months => i))::date;
        v_existed := to_regclass(format('public.system_metrics_%s', to_char(v_month, 'YYYY_MM'))) is not null;
        partition_name := fleetbench.ensure_metrics_partition(v_month);
        action := case when v_existed then 'kept' else 'created' end;
        return next;
    end loop;

    for v_child in
        select c.relname
        from pg_inherits i
        join pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'public.system_metrics'::regclass
          and c.relname ~ '^system_metrics_[0-9]{4}_[0-9]{2}$'
        order by c.relname
    loop
        v_month := to_date(right(v_child.relname, 7), 'YYYY_MM');
        if (v_month + interval '1 month') <= (v_current - make_interval(months => v_retention)) then
            execute format('drop table public.%I', v_child.relname);
            action := 'dropped';
            partition_name := v_child.relname;
            return next;
        end if;
    end loop;
end
$$;
revoke all on function fleetbench.maintain_metrics_partitions(timestamptz) from public;
grant execute on function fleetbench.maintain_metrics_partitions(timestamptz) to service_role;

select fleetbench.maintain_metrics_partitions();
