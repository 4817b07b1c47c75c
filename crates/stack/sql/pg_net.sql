-- The part of pg_net the project's database webhooks use, for a local cluster without the
-- extension: `net.http_post` queues a request and returns its id; the stack's worker sends queued
-- requests after their transaction commits and records each answer in `net._http_response`.
-- Idempotent: applied at bootstrap and again whenever the worker starts.
create schema if not exists net;
create table if not exists net.http_request_queue (
    id bigserial primary key,
    method text not null,
    url text not null,
    headers jsonb not null default '{}',
    body bytea,
    timeout_milliseconds int not null default 5000,
    created timestamptz not null default now()
);
create table if not exists net._http_response (
    id bigint primary key,
    status_code int,
    content_type text,
    headers jsonb,
    content text,
    timed_out boolean,
    error_msg text,
    created timestamptz not null default now()
);
create or replace function net.http_post(
    url text,
    body jsonb default '{}'::jsonb,
    params jsonb default '{}'::jsonb,
    headers jsonb default '{"Content-Type": "application/json"}'::jsonb,
    timeout_milliseconds int default 5000
) returns bigint language plpgsql security definer set search_path = '' as $$
#variable_conflict use_variable
declare
    v_id bigint;
    v_url text := url;
begin
    if params is not null and params <> '{}'::jsonb then
        v_url := v_url || case when strpos(v_url, '?') > 0 then '&' else '?' end
            || (select string_agg(key || '=' || value, '&') from jsonb_each_text(params));
    end if;
    insert into net.http_request_queue (method, url, headers, body, timeout_milliseconds)
    values ('POST', v_url, coalesce(headers, '{}'::jsonb),
            convert_to(coalesce(body, '{}'::jsonb)::text, 'UTF8'), timeout_milliseconds)
    returning id into v_id;
    perform pg_notify('fleetbench_net', v_id::text);
    return v_id;
end
$$;
revoke all on function net.http_post(text, jsonb, jsonb, jsonb, int) from public;
