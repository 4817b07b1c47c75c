//! Fixtures: the migrated shared stack, users and devices, and transactions carrying a user's JWT
//! claims the way PostgREST sets them (`set local role authenticated`, `request.jwt.claims`).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use tokio::sync::OnceCell;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Transaction};
use uuid::Uuid;

static MIGRATED: OnceCell<String> = OnceCell::const_new();

pub fn migrations_dir() -> PathBuf {
    fleetbench_stack::testing::workspace_root().join("migrations")
}

pub struct Db {
    pub client: Client,
}

impl Db {
    /// A superuser connection to the binary's shared stack, migrated once.
    pub async fn connect() -> Db {
        let url = MIGRATED
            .get_or_init(|| async {
                let state = fleetbench_stack::testing::shared(|_| {});
                let url = state.direct_db_url();
                let mut client = raw_connect(&url).await;
                let migrations = fleetbench_schema::load_dir(&migrations_dir()).unwrap();
                fleetbench_schema::apply(&mut client, &migrations, &mut |_| {})
                    .await
                    .unwrap();
                url
            })
            .await;
        Db {
            client: raw_connect(url).await,
        }
    }
}

async fn raw_connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .expect("connecting to the test stack");
    tokio::spawn(conn);
    client
}

/// A user as the Auth admin API would create it, tagged with the schema tests' run id.
pub async fn new_user(client: &Client, label: &str) -> Uuid {
    new_user_in_run(client, &format!("schema-tests-{label}")).await
}

/// A user tagged with `run_id` in `app_metadata`, as fleetbench provisions its agents.
pub async fn new_user_in_run(client: &Client, run_id: &str) -> Uuid {
    let email = format!("{run_id}-{}@fleetbench.test", Uuid::new_v4());
    client
        .query_typed(
            "insert into auth.users (email, email_confirmed_at, raw_app_meta_data) \
             values ($1, now(), jsonb_build_object('provider', 'email', $2::text, $3::text)) returning id",
            &[(&email, Type::TEXT), (&fleetbench_schema::names::RUN_ID_KEY, Type::TEXT), (&run_id, Type::TEXT)],
        )
        .await
        .unwrap()[0]
        .get(0)
}

/// A device owned by `user`, inserted as that user.
pub async fn new_device(client: &mut Client, user: Uuid) -> Uuid {
    let tx = user_tx(client, user).await;
    let id = tx
        .query_typed(
            "insert into devices (hostname, os, cpu_cores, ram_bytes, form_factor) \
             values ('host-' || gen_random_uuid(), 'Linux', 8, 17179869184, 'laptop') returning id",
            &[],
        )
        .await
        .unwrap()[0]
        .get(0);
    tx.commit().await.unwrap();
    id
}

/// A transaction running as `user` does behind the Data API.
pub async fn user_tx(client: &mut Client, user: Uuid) -> Transaction<'_> {
    let tx = client.transaction().await.unwrap();
    let claims =
        serde_json::json!({ "sub": user, "role": "authenticated", "aud": "authenticated" })
            .to_string();
    tx.query_typed(
        "select set_config('request.jwt.claims', $1, true)",
        &[(&claims, Type::TEXT)],
    )
    .await
    .unwrap();
    tx.batch_execute("set local role authenticated")
        .await
        .unwrap();
    tx
}

/// Runs `f` in a transaction as `user`, then rolls back.
pub async fn as_user<T>(
    client: &mut Client,
    user: Uuid,
    f: impl for<'a> FnOnce(&'a Transaction<'a>) -> Pin<Box<dyn Future<Output = T> + 'a>>,
) -> T {
    let tx = user_tx(client, user).await;
    let out = f(&tx).await;
    tx.rollback().await.unwrap();
    out
}
