-- Cleanup in bounded transactions. After an hours-long run a run owns tens of millions of rows:
-- one statement deleting them all holds locks and WAL for minutes and is lost whole when it is
-- interrupted. Each call of cleanup_run_batch removes at most p_limit rows of the first table that
-- still holds the run's rows (children before parents, users last) and says which; the caller
-- calls again, each call its own transaction, until a call returns no row. An interrupted cleanup
-- keeps every batch already committed, and calling again finishes the job.

create or replace function fleetbench.cleanup_run_batch(p_run_id text, p_limit integer)
returns table (table_name text, rows_deleted bigint)
language plpgsql security definer set search_path = '' as $$
declare
    v_users uuid[];
    v_count bigint;
    v_step record;
begin
    if coalesce(p_run_id, '') = '' then
        raise exception 'run id must not be empty' using errcode = '22023';
    end if;
    if coalesce(p_limit, 0) < 1 then
        raise exception 'batch size must be at least 1' using errcode = '22023';
    end if;
    select coalesce(array_agg(id), '{}') into v_users
    from auth.users where raw_app_meta_data ->> 'fleetbench_run_id' = p_run_id;
    if cardinality(v_users) = 0 then
        return;
    end if;
    -- Children before parents, the users last; each row found by its key (system_metrics' key
    -- (id, ts) finds the row in its partition).
    for v_step in
        select * from (values
            (1, 'alerts', 'public.alerts', 'id', 'user_id'),
            (2, 'memories', 'public.memories', 'id', 'user_id'),
            (3, 'system_metrics', 'public.system_metrics', 'id, ts', 'user_id'),
            (4, 'devices', 'public.devices', 'id', 'user_id'),
            (5, 'profiles', 'public.profiles', 'user_id', 'user_id'),
            (6, 'auth.users', 'auth.users', 'id', 'id')
        ) as steps (ord, name, tbl, key, owner)
        order by ord
    loop
        execute format(
            'delete from %1$s where (%2$s) in (select %2$s from %1$s where %3$s = any ($1) limit $2)',
            v_step.tbl, v_step.key, v_step.owner)
        using v_users, p_limit;
        get diagnostics v_count = row_count;
        if v_count > 0 then
            table_name := v_step.name;
            rows_deleted := v_count;
            return next;
            return;
        end if;
    end loop;
end
$$;
revoke all on function fleetbench.cleanup_run_batch(text, integer) from public;
grant execute on function fleetbench.cleanup_run_batch(text, integer) to service_role;
