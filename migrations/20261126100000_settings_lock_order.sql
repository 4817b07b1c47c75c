-- set_setting() rebuilds the alert trigger on system_metrics, which needs an ACCESS EXCLUSIVE lock on
-- it. Taken first, before the settings row, so a change of threshold waits for in-flight inserts
-- instead of deadlocking with one whose trigger is reading or writing behind it.

create or replace function fleetbench.set_setting(p_key text, p_value text)
returns void language plpgsql security definer set search_path = '' as $$
begin
    lock table public.system_metrics in access exclusive mode;
    update fleetbench.settings set value = p_value where key = p_key;
    if not found then
        raise exception 'unknown setting %', p_key using errcode = '22023',
            hint = 'see table fleetbench.settings for the known keys';
    end if;
    perform fleetbench.apply_alert_settings();
end
$$;
revoke all on function fleetbench.set_setting(text, text) from public;
grant execute on function fleetbench.set_setting(text, text) to service_role;
