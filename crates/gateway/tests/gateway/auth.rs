//! Supabase Auth: keys, admin users, password and refresh grants, logout, sign-up, rate limits.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Gateway, gateway, stack, start, unique};

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

/// The refresh grant; the answer's status and body.
async fn refresh(token: &str) -> (StatusCode, Value) {
    call(
        Method::POST,
        "/auth/v1/token?grant_type=refresh_token",
        None,
        Some(json!({ "refresh_token": token })),
    )
    .await
}

/// A signed-in session's refresh token, refreshed `n` times: every token of the chain, oldest first.
async fn chain(label: &str, n: usize) -> Vec<String> {
    let email = unique(label);
    create_user(&email, "secret123").await;
    let (_, session) = sign_in(&email, "secret123").await;
    let mut tokens = vec![session["refresh_token"].as_str().unwrap().to_string()];
    for _ in 0..n {
        let (status, next) = refresh(tokens.last().unwrap()).await;
        assert_eq!(status, 200, "{next}");
        let next = next["refresh_token"].as_str().unwrap().to_string();
        assert!(!tokens.contains(&next), "the refresh token rotates");
        tokens.push(next);
    }
    tokens
}

/// Moves `token`'s revocation `secs` into the past (the clock, not a sleep).
async fn age(db: &tokio_postgres::Client, token: &str, secs: f64) {
    db.execute(
        "update auth.refresh_tokens set updated_at = now() - make_interval(secs => $2) where token = $1",
        &[&token, &secs],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn refresh_rotates_and_reuse_follows_gotrue() {
    let (db, conn) = tokio_postgres::connect(&gateway().db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    // The parent of the active token, retried long after the reuse interval (10 s in
    // supabase/config.toml), gets the active token back: the client never saw its answer.
    let t = chain("refresh-parent", 1).await;
    age(&db, &t[0], 60.0).await;
    let (status, retry) = refresh(&t[0]).await;
    assert_eq!(status, 200, "{retry}");
    assert_eq!(retry["refresh_token"], t[1].as_str());

    // An older token (not the active one's parent) inside the interval: a new token swapped in.
    let t = chain("refresh-quick", 2).await;
    age(&db, &t[0], 1.0).await;
    let (status, swapped) = refresh(&t[0]).await;
    assert_eq!(status, 200, "{swapped}");
    let fresh = swapped["refresh_token"].as_str().unwrap();
    assert!(!t.iter().any(|x| x == fresh), "{swapped}");

    // The same, after the interval: reuse, and the whole family is revoked.
    let t = chain("refresh-late", 2).await;
    age(&db, &t[0], 60.0).await;
    let r1 = t[2].clone();
    let (status, body) = refresh(&t[0]).await;
    assert_eq!(status, 400);
    assert_eq!(body["error_code"], "refresh_token_already_used", "{body}");
    assert_eq!(body["msg"], "Invalid Refresh Token: Already Used");
    // The whole family is revoked (GoTrue's RevokeTokenFamily), the newest token included; past the
    // reuse interval it fails too.
    let live: i64 = db
        .query_one(
            "select count(*) from auth.refresh_tokens where not revoked and session_id = \
             (select session_id from auth.refresh_tokens where token = $1)",
            &[&r1],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(live, 0);
    age(&db, &r1, 60.0).await;
    let (status, body) = refresh(&r1).await;
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

/// IP address forwarding as hosted: with it on, a `/token` call carrying the secret key is limited
/// by its `Sb-Forwarded-For` address (100 sign-ins from 100 addresses all pass a burst of 30); with
/// the publishable key, or with forwarding off, the header changes nothing (the 31st call is 429).
#[tokio::test]
async fn sb_forwarded_for_counts_only_with_the_secret_key_and_forwarding_on() {
    let keys = stack()
        .secrets
        .opaque
        .clone()
        .expect("the stack's new keys");
    let limited = |forwarding: bool| {
        start(move |c| {
            c.auth.rate_limits = Some(fleetbench_gateway::ratelimit::Limits::from_config(
                &fleetbench_stack::project::AuthRateLimits {
                    token_refresh: 1,
                    ..Default::default()
                },
            ));
            c.auth.sb_forwarded_for = forwarding;
        })
    };
    // Wrong passwords: each call still counts against its bucket, and answers 400 until it is empty.
    let grants = |g: Gateway, key: String| async move {
        let mut statuses = Vec::new();
        for i in 0..100u32 {
            let r = Gateway::send(
                reqwest::Client::new()
                    .post(format!("{}/auth/v1/token?grant_type=password", g.url))
                    .header("apikey", &key)
                    .header(
                        "sb-forwarded-for",
                        format!("198.18.{}.{}, 10.0.0.1", i / 250, i % 250 + 1),
                    )
                    .json(&json!({ "email": "nobody@fleetbench.test", "password": "wrong" })),
            )
            .await;
            statuses.push(r.status.as_u16());
        }
        statuses
    };
    let forwarded = grants(limited(true), keys.secret.clone()).await;
    assert!(forwarded.iter().all(|s| *s == 400), "{forwarded:?}");
    for (forwarding, key) in [
        (true, keys.publishable.clone()),
        (false, keys.secret.clone()),
    ] {
        let statuses = grants(limited(forwarding), key).await;
        assert!(statuses[..30].iter().all(|s| *s == 400), "{statuses:?}");
        assert!(statuses[30..].iter().all(|s| *s == 429), "{statuses:?}");
    }
}
