-- People and the machines their desktop agents run on.
-- Every public table keeps its owner in `user_id` (= auth.uid()) and has row-level security on.

create schema if not exists fleetbench;
comment on schema fleetbench is
    'Private helpers of the System Health AI schema: settings, maintenance, run cleanup. Not exposed by the Data API.';

-- Settings the triggers and the maintenance job read. A row per knob, so a dashboard can show them.
create table if not exists fleetbench.settings (
    key text primary key,
    value text not null,
    description text not null
);
insert into fleetbench.settings (key, value, description) values
    ('thermal_critical_c', '95', 'cpu_temp_c at or above this creates a critical thermal alert'),
    ('disk_warning_pct', '95', 'disk_used_pct at or above this creates a disk warning alert'),
    ('metrics_premake_months', '3', 'system_metrics partitions created ahead of the current month'),
    ('metrics_retention_months', '13', 'system_metrics partitions ending this many months ago or earlier are dropped')
on conflict (key) do nothing;

create table if not exists public.profiles (
    user_id uuid primary key references auth.users (id) on delete cascade,
    display_name text,
    created_at timestamptz not null default now()
);

-- A profile for every new user, the usual Supabase pattern.
create or replace function fleetbench.create_profile_for_new_user()
returns trigger language plpgsql security definer set search_path = '' as $$
begin
    insert into public.profiles (user_id, display_name)
    values (new.id, coalesce(new.raw_user_meta_data ->> 'display_name', split_part(new.email, '@', 1)))
    on conflict (user_id) do nothing;
    return new;
end
$$;
drop trigger if exists on_auth_user_created on auth.users;
create trigger on_auth_user_created after insert on auth.users
    for each row execute function fleetbench.create_profile_for_new_user();

create table if not exists public.devices (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
    hostname text not null,
    os text,
    cpu_model text,
    cpu_cores integer check (cpu_cores > 0),
    ram_bytes bigint check (ram_bytes > 0),
    disk_bytes bigint check (disk_bytes > 0),
    form_factor text check (form_factor in ('laptop', 'desktop', 'workstation', 'server', 'vm')),
    has_gpu boolean not null default false,
    agent_version text,
    last_seen_at timestamptz,
    created_at timestamptz not null default now()
);
create index if not exists devices_user_id_idx on public.devices (user_id);

alter table public.profiles enable row level security;
alter table public.devices enable row level security;

drop policy if exists "profiles: owner reads" on public.profiles;
create policy "profiles: owner reads" on public.profiles
    for select to authenticated using (user_id = (select auth.uid()));
drop policy if exists "profiles: owner updates" on public.profiles;
create policy "profiles: owner updates" on public.profiles
    for update to authenticated using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));

drop policy if exists "devices: owner reads" on public.devices;
create policy "devices: owner reads" on public.devices
    for select to authenticated using (user_id = (select auth.uid()));
drop policy if exists "devices: owner inserts" on public.devices;
create policy "devices: owner inserts" on public.devices
    for insert to authenticated with check (user_id = (select auth.uid()));
drop policy if exists "devices: owner updates" on public.devices;
create policy "devices: owner updates" on public.devices
    for update to authenticated using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
drop policy if exists "devices: owner deletes" on public.devices;
create policy "devices: owner deletes" on public.devices
    for delete to authenticated using (user_id = (select auth.uid()));

-- New tables are not exposed to the Data API roles by default on hosted projects: grant explicitly.
revoke all on public.profiles, public.devices from anon;
grant select, update (display_name) on public.profiles to authenticated;
grant select, insert, update, delete on public.devices to authenticated;
grant all on public.profiles, public.devices to service_role;
