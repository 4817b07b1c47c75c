-- Everything a fleetbench run writes is owned by users it created, and each of those users carries
-- the run id in app_metadata.fleetbench_run_id (set through the Auth admin API). Removing a run is
-- removing exactly those users' rows, then the users.

create or replace function fleetbench.cleanup_run(p_run_id text)
returns table (table_name text, rows_deleted bigint)
language plpgsql security definer set search_path = '' as $$
declare
    v_users uuid[];
    v_count bigint;
begin
    if coalesce(p_run_id, '') = '' then
        raise exception 'run id must not be empty' using errcode = '22023';
    end if;
    select coalesce(array_agg(id), '{}') into v_users
    from auth.users where raw_app_meta_data ->> 'fleetbench_run_id' = p_run_id;

    delete from public.alerts where user_id = any (v_users);
    get diagnostics v_count = row_count; table_name := 'alerts'; rows_deleted := v_count; return next;
    delete from public.memories where user_id = any (v_users);
    get diagnostics v_count = row_count; table_name := 'memories'; rows_deleted := v_count; return next;
    delete from public.system_metrics where user_id = any (v_users);
    get diagnostics v_count = row_count; table_name := 'system_metrics'; rows_deleted := v_count; return next;
    delete from public.devices where user_id = any (v_users);
    get diagnostics v_count = row_count; table_name := 'devices'; rows_deleted := v_count; return next;
    delete from public.profiles where user_id = any (v_users);
    get diagnostics v_count = row_count; table_name := 'profiles'; rows_deleted := v_count; return next;
    delete from auth.users where id = any (v_users);
    get diagnostics v_count = row_count; table_name := 'auth.users'; rows_deleted := v_count; return next;
end
$$;
revoke all on function fleetbench.cleanup_run(text) from public;
grant execute on function fleetbench.cleanup_run(text) to service_role;
