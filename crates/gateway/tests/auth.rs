//! Supabase Auth stand-in over HTTP, against a real stack (one per test binary).
//!
//! Contents:
//! - keys: no `apikey` → 401 with Kong's message.
//! - admin: only the service role creates users; duplicates are 422 `email_exists`.
//! - password: wrong password → 400 `invalid_credentials`; right → GoTrue's token response and claims.
//! - refresh: rotation; reuse within the interval answers with the current token; reuse after it
//!   revokes the session (`refresh_token_already_used`); logout ends the session.

use std::sync::OnceLock;

use fleetbench_gateway::GatewayConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Gateway {
    url: String,
    anon: String,
    service: String,
    secret: String,
    db_url: String,
}

fn gateway() -> &'static Gateway {
    static G: OnceLock<Gateway> = OnceLock::new();
    G.get_or_init(|| {
        let state = fleetbench_stack::testing::shared(|_| {});
        let db_url = state.direct_db_url();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let config = GatewayConfig::new(
            db_url.clone(),
            state.secrets.jwt_secret.clone(),
            url.clone(),
        );
        let migrate_url = db_url.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let (mut client, conn) =
                    tokio_postgres::connect(&migrate_url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                tokio::spawn(conn);
                let dir = fleetbench_stack::testing::workspace_root().join("migrations");
                fleetbench_schema::apply(
                    &mut client,
                    &fleetbench_schema::load_dir(&dir).unwrap(),
                    &mut |_| {},
                )
                .await
                .unwrap();
                let app = fleetbench_gateway::router(config).unwrap();
                axum::serve(tokio::net::TcpListener::from_std(listener).unwrap(), app)
                    .await
                    .unwrap();
            });
        });
        Gateway {
            url,
            anon: state.secrets.anon_key.clone(),
            service: state.secrets.service_role_key.clone(),
            secret: state.secrets.jwt_secret.clone(),
            db_url,
        }
    })
}

async fn call(
    method: reqwest::Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let g = gateway();
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", g.url))
        .header("apikey", &g.anon);
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    // The gateway thread may still be migrating: retry connection refusals only.
    let res = loop {
        match req.try_clone().unwrap().send().await {
            Ok(r) => break r,
            Err(e) if e.is_connect() => tokio::task::yield_now().await,
            Err(e) => panic!("{path}: {e}"),
        }
    };
    let status = res.status();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn create_user(email: &str, password: &str) -> Value {
    let (status, body) = call(
        reqwest::Method::POST,
        "/auth/v1/admin/users",
        Some(&gateway().service),
        Some(json!({ "email": email, "password": password, "email_confirm": true, "app_metadata": { "fleetbench_run_id": "auth-tests" } })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn sign_in(email: &str, password: &str) -> (StatusCode, Value) {
    call(
        reqwest::Method::POST,
        "/auth/v1/token?grant_type=password",
        None,
        Some(json!({ "email": email, "password": password })),
    )
    .await
}

fn unique(label: &str) -> String {
    format!("{label}-{}@fleetbench.test", uuid::Uuid::new_v4())
}

#[tokio::test]
async fn requests_without_apikey_are_refused() {
    let g = gateway();
    let _ = call(reqwest::Method::GET, "/auth/v1/settings", None, None).await; // gateway up
    let res = reqwest::get(format!("{}/auth/v1/settings", g.url))
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({ "message": "No API key found in request" })
    );
}

#[tokio::test]
async fn only_the_service_role_creates_users() {
    let email = unique("admin");
    let (status, body) = call(
        reqwest::Method::POST,
        "/auth/v1/admin/users",
        Some(&gateway().anon),
        Some(json!({ "email": email, "password": "secret123" })),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_admin")),
        "{body}"
    );

    let user = create_user(&email, "secret123").await;
    assert_eq!(user["email"], email.as_str());
    assert_eq!(user["app_metadata"]["provider"], "email");
    assert_eq!(user["app_metadata"]["fleetbench_run_id"], "auth-tests");
    assert!(user["email_confirmed_at"].is_string());

    let (status, body) = call(
        reqwest::Method::POST,
        "/auth/v1/admin/users",
        Some(&gateway().service),
        Some(json!({ "email": email, "password": "secret123" })),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("email_exists")),
        "{body}"
    );
}

#[tokio::test]
async fn password_grant_issues_gotrue_tokens() {
    let email = unique("password");
    let user = create_user(&email, "correct-horse").await;
    let (status, body) = sign_in(&email, "wrong-horse").await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({ "code": 400, "error_code": "invalid_credentials", "msg": "Invalid login credentials" })
    );

    let (status, body) = sign_in(&email, "correct-horse").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["user"]["id"], user["id"]);
    let jwt = body["access_token"].as_str().unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_audience(&["authenticated"]);
    let claims = jsonwebtoken::decode::<Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_secret(gateway().secret.as_bytes()),
        &v,
    )
    .expect("the access token verifies with the stack's JWT secret")
    .claims;
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(claims["role"], "authenticated");
    assert_eq!(claims["email"], email.as_str());
    assert_eq!(claims["aal"], "aal1");
    assert_eq!(claims["amr"][0]["method"], "password");
    assert_eq!(claims["is_anonymous"], false);
    assert_eq!(claims["iss"], format!("{}/auth/v1", gateway().url));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(body["expires_at"], claims["exp"]);
    assert!(claims["session_id"].is_string());

    let (status, me) = call(reqwest::Method::GET, "/auth/v1/user", Some(jwt), None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], user["id"]);
}

#[tokio::test]
async fn refresh_rotates_tolerates_quick_reuse_and_revokes_on_late_reuse() {
    let email = unique("refresh");
    create_user(&email, "secret123").await;
    let (_, session) = sign_in(&email, "secret123").await;
    let r0 = session["refresh_token"].as_str().unwrap().to_string();
    let refresh = |token: String| async move {
        call(
            reqwest::Method::POST,
            "/auth/v1/token?grant_type=refresh_token",
            None,
            Some(json!({ "refresh_token": token })),
        )
        .await
    };

    let (status, first) = refresh(r0.clone()).await;
    assert_eq!(status, 200, "{first}");
    let r1 = first["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r1, r0, "the refresh token rotates");

    // A retry of r0 inside the reuse interval gets the session's current token, not a new family.
    let (status, retry) = refresh(r0.clone()).await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["refresh_token"], r1.as_str());

    // Move r0's revocation out of the reuse interval (the clock, not a sleep), then reuse it.
    let (db, conn) = tokio_postgres::connect(&gateway().db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    db.execute(
        "update auth.refresh_tokens set updated_at = now() - interval '1 minute' where token = $1",
        &[&r0],
    )
    .await
    .unwrap();
    let (status, body) = refresh(r0).await;
    assert_eq!(status, 400);
    assert_eq!(body["error_code"], "refresh_token_already_used", "{body}");
    assert_eq!(body["msg"], "Invalid Refresh Token: Already Used");
    // The whole family is revoked: r1, the newest token, fails too.
    let (status, body) = refresh(r1).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("refresh_token_already_used")),
        "{body}"
    );
}

#[tokio::test]
async fn logout_ends_the_session() {
    let email = unique("logout");
    create_user(&email, "secret123").await;
    let (_, session) = sign_in(&email, "secret123").await;
    let jwt = session["access_token"].as_str().unwrap();
    let (status, _) = call(reqwest::Method::POST, "/auth/v1/logout", Some(jwt), None).await;
    assert_eq!(status, 204);
    let (status, body) = call(
        reqwest::Method::POST,
        "/auth/v1/token?grant_type=refresh_token",
        None,
        Some(json!({ "refresh_token": session["refresh_token"] })),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("refresh_token_not_found")),
        "{body}"
    );
}
