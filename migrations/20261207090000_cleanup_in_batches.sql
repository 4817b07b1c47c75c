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

    delete from public.alerts where id in (
        select id from public.alerts where user_id = any (v_users) limit p_limit);
    get diagnostics v_count = row_count;
    if v_count > 0 then table_name := 'alerts'; rows_deleted := v_count; return next; return; end if;

    delete from public.memories where id in (
        select id from public.memories where user_id = any (v_users) limit p_limit);
    get diagnostics v_count = row_count;
    if v_count > 0 then table_name := 'memories'; rows_deleted := v_count; return next; return; end if;

    -- The primary key (id, ts) finds each row in its partition.
    delete from public.system_metrics where (id, ts) in (
        select id, ts from public.system_metrics where user_id = any (v_users) limit p_limit);
    get diagnostics v_count = row_count;
    if v_count > 0 then table_name := 'system_metrics'; rows_deleted := v_count; return next; return; end if;

    delete from public.devices where id in (
        select id from public.devices where user_id = any (v_users) limit p_limit);
    get diagnostics v_count = row_count;
    if v_count > 0 then table_name := 'devices'; rows_deleted := v_count; return next; return; end if;

    delete from public.profiles where user_id in (
        select user_id from public.profiles where user_id = any (v_users) limit p_limit);
    get diagnostics v_count = row_count;
    if v_count > 0 then table_name := 'profiles'; rows_deleted := v_count; return next; return; end if;

    delete from auth.users where id in (select unnest(v_users) limit p_limit);
    get diagnostics v_count = row_count;
    table_name := 'auth.users'; rows_deleted := v_count; return next;
end
$$;
revoke all on function fleetbench.cleanup_run_batch(text, integer) from public;
grant execute on function fleetbench.cleanup_run_batch(text, integer) to service_role;
