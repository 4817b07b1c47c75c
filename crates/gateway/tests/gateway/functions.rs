//! Edge Functions through the gateway: `verify_jwt` is enforced before the function runs, and the
//! function's own answer comes back unchanged.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{gateway, start};

fn not_an_insert() -> serde_json::Value {
    json!({ "type": "UPDATE", "table": "alerts", "schema": "public", "record": {}, "old_record": {} })
}

#[tokio::test]
async fn functions_are_proxied_with_verify_jwt() {
    let g = gateway();
    let http = reqwest::Client::new();
    let url = format!("{}/functions/v1/anomaly-webhook", g.url);

    let res = http.post(&url).json(&not_an_insert()).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        json!({ "msg": "Error: Missing authorization header" })
    );
    let res = http
        .post(&url)
        .bearer_auth("eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl")
        .json(&not_an_insert())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        json!({ "msg": "Invalid JWT" })
    );

    // A user's token (no apikey needed, as a database webhook calls it): the function runs.
    let agent = g.agent("functions").await;
    let res = http
        .post(&url)
        .bearer_auth(&agent.token)
        .json(&not_an_insert())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap(),
        json!({ "forwarded": false, "reason": "not an alert insert" })
    );
    let res = http
        .get(format!("{url}/sub/path?x=1"))
        .bearer_auth(&g.anon)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        StatusCode::METHOD_NOT_ALLOWED,
        "the function's own 405"
    );
    assert_eq!(res.headers()["content-type"], "application/json");

    let (status, body) = g
        .call(
            Method::POST,
            "/functions/v1/no-such-function",
            Some(&g.anon),
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("NOT_FOUND"))
    );

    // verify_jwt = false: the function is reached without a token and checks callers itself.
    let open = start(|c| {
        for route in c.functions.values_mut() {
            route.verify_jwt = false;
        }
    });
    let res = http
        .post(format!("{}/functions/v1/anomaly-webhook", open.url))
        .json(&not_an_insert())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}
