//! Supabase Auth: keys, admin users, password and refresh grants, logout, sign-up, rate limits.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Gateway, gateway, start, unique};

async fn call(
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    gateway().call(method, path, bearer, body).await
}

async fn create_user(email: &str, password: &str) -> Value {
    gateway().create_user(email, password).await
}

async fn sign_in(email: &str, password: &str) -> (StatusCode, Value) {
    gateway().sign_in(email, password).await
}

#[tokio::test]
async fn requests_without_apikey_are_refused() {
    let g = gateway();
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
        Method::POST,
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
    assert_eq!(user["app_metadata"]["fleetbench_run_id"], "gateway-tests");
    assert!(user["email_confirmed_at"].is_string());

    let (status, body) = call(
        Method::POST,
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

    let (status, me) = call(Method::GET, "/auth/v1/user", Some(jwt), None).await;
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
            Method::POST,
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
    let (status, _) = call(Method::POST, "/auth/v1/logout", Some(jwt), None).await;
    assert_eq!(status, 204);
    let (status, body) = call(
        Method::POST,
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

#[tokio::test]
async fn signup_follows_the_project_settings() {
    // supabase/config.toml: sign-ups on, confirmations off, anonymous sign-ins off.
    let email = unique("signup");
    let (status, body) = call(Method::POST, "/auth/v1/signup", None,
        Some(json!({ "email": email, "password": "long-enough", "data": { "display_name": "Dana" } }))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["email"], email.as_str());
    assert_eq!(body["user"]["user_metadata"]["display_name"], "Dana");
    assert!(body["access_token"].is_string() && body["refresh_token"].is_string());
    let (status, body) = call(
        Method::POST,
        "/auth/v1/signup",
        None,
        Some(json!({ "email": email, "password": "long-enough" })),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("user_already_exists")
        ),
        "{body}"
    );
    let (status, body) = call(
        Method::POST,
        "/auth/v1/signup",
        None,
        Some(json!({ "email": unique("short"), "password": "12345" })),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("weak_password")),
        "{body}"
    );
    let (status, body) = call(Method::POST, "/auth/v1/signup", None, Some(json!({}))).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("anonymous_provider_disabled")
        ),
        "{body}"
    );

    let open = start(|c| c.auth.enable_anonymous_sign_ins = true);
    let (status, body) = open
        .call(Method::POST, "/auth/v1/signup", None, Some(json!({})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["is_anonymous"], true);
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.set_audience(&["authenticated"]);
    let claims = jsonwebtoken::decode::<Value>(
        body["access_token"].as_str().unwrap(),
        &jsonwebtoken::DecodingKey::from_secret(open.secret.as_bytes()),
        &v,
    )
    .unwrap()
    .claims;
    assert_eq!(
        (claims["role"].as_str(), claims["is_anonymous"].as_bool()),
        (Some("authenticated"), Some(true))
    );
    let (_, settings) = open
        .call(Method::GET, "/auth/v1/settings", None, None)
        .await;
    assert_eq!(settings["external"]["anonymous_users"], true);
}

/// Under the `hosted` profile each client IP gets GoTrue's buckets: 30 `/token` calls at once, then
/// 429 until the bucket refills; other clients are not affected. The refill here is 1 per 5 min
/// (not GoTrue's 150) so that no token comes back while the test runs, however slow the machine;
/// the refill arithmetic itself is checked with explicit instants in `ratelimit`'s unit tests.
#[tokio::test]
async fn hosted_profile_limits_token_calls_per_client() {
    let hosted = start(|c| {
        c.auth.rate_limits = Some(fleetbench_gateway::ratelimit::Limits::from_config(
            &fleetbench_stack::project::AuthRateLimits {
                token_refresh: 1,
                ..Default::default()
            },
        ));
        c.auth.rate_limit_header = Some("x-client-ip".into());
    });
    let email = unique("limited");
    hosted.create_user(&email, "secret123").await;
    let grant = |ip: &'static str| {
        Gateway::send(
            hosted
                .request(Method::POST, "/auth/v1/token?grant_type=password", None)
                .header("x-client-ip", ip)
                .json(&json!({ "email": email, "password": "secret123" })),
        )
    };
    let mut statuses = Vec::new();
    for _ in 0..31 {
        statuses.push(grant("203.0.113.7").await.status.as_u16());
    }
    assert!(statuses[..30].iter().all(|s| *s == 200), "{statuses:?}");
    let limited = grant("203.0.113.7").await;
    assert_eq!(statuses[30], 429);
    assert_eq!(limited.status, 429);
    assert_eq!(
        limited.body,
        json!({ "code": 429, "error_code": "over_request_rate_limit", "msg": "Request rate limit reached" })
    );
    assert_eq!(
        grant("203.0.113.8").await.status,
        200,
        "another client has its own bucket"
    );
    // Admin routes carry no limiter.
    hosted
        .create_user(&unique("admin-unlimited"), "secret123")
        .await;

    // Without the header, the peer address is the key: 127.0.0.1 has its own fresh bucket.
    let (status, _) = hosted.sign_in(&email, "secret123").await;
    assert_eq!(status, 200);
}
