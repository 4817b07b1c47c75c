-- Database webhook: every alert is POSTed to the anomaly-webhook edge function after its insert
-- commits, with the Supabase webhook payload, through pg_net (`net.http_post`). Where the
-- function lives differs per project, so the target is a row of fleetbench.webhook_targets that
-- `fleetbench migrate` fills from SUPABASE_URL and the service-role key; with no URL set, nothing
-- is sent.

do $$
begin
    if not exists (select 1 from pg_namespace where nspname = 'net') then
        create extension if not exists pg_net;
    end if;
end
$$;

create table if not exists fleetbench.webhook_targets (
    name text primary key,
    url text not null default '',
    headers jsonb not null default '{"Content-Type": "application/json"}',
    timeout_ms int not null default 5000
);
-- Holds a bearer key: readable by its owner only, like a Vault secret.
alter table fleetbench.webhook_targets enable row level security;
revoke all on fleetbench.webhook_targets from public;
insert into fleetbench.webhook_targets (name) values ('anomaly-webhook') on conflict do nothing;

create or replace function fleetbench.alert_webhook()
returns trigger language plpgsql security definer set search_path = '' as $$
declare
    t fleetbench.webhook_targets;
begin
    select * into t from fleetbench.webhook_targets where name = 'anomaly-webhook' and url <> '';
    if found then
        perform net.http_post(
            url := t.url,
            body := jsonb_build_object('type', tg_op, 'table', tg_table_name, 'schema', tg_table_schema,
                                       'record', to_jsonb(new), 'old_record', null),
            params := '{}'::jsonb,
            headers := t.headers,
            timeout_milliseconds := t.timeout_ms);
    end if;
    return null;
end
$$;
revoke all on function fleetbench.alert_webhook() from public;

drop trigger if exists alerts_anomaly_webhook on public.alerts;
create trigger alerts_anomaly_webhook after insert on public.alerts
    for each row execute function fleetbench.alert_webhook();
