//! Fixtures: the migrated shared stack, gateways on free ports (the shared default one, or one with
//! its own settings), and signed-in users that own a device.

use std::sync::OnceLock;

use fleetbench_gateway::GatewayConfig;
use fleetbench_stack::StackState;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

pub struct Gateway {
    pub url: String,
    pub anon: String,
    pub service: String,
    pub secret: String,
    pub db_url: String,
}

/// The shared stack with the project's migrations applied.
pub fn stack() -> &'static StackState {
    static MIGRATED: OnceLock<&'static StackState> = OnceLock::new();
    MIGRATED.get_or_init(|| {
        let state = fleetbench_stack::testing::shared(|_| {});
        let url = state.direct_db_url();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(async move {
                    let dir = fleetbench_stack::testing::workspace_root().join("migrations");
                    fleetbench_schema::apply_dir(&url, &dir).await.unwrap();
                })
        })
        .join()
        .expect("migrating the test stack");
        state
    })
}

/// The gateway with the project's settings (profile `unlimited`), shared by the tests.
pub fn gateway() -> &'static Gateway {
    static G: OnceLock<Gateway> = OnceLock::new();
    G.get_or_init(|| {
        let running = start_running(|_| {});
        let url = running.url.clone();
        drop(running);
        at(url)
    })
}

/// The project's gateway as the `hosted` profile serves it: over HTTPS (and WSS) with a certificate of
/// the stack's CA, user tokens signed with the asymmetric key, and the publishable and secret keys
/// as the fixture's keys; with a Realtime slot of its own. Also the CA file clients trust.
pub fn tls_gateway() -> &'static (Gateway, std::path::PathBuf) {
    static G: OnceLock<(Gateway, std::path::PathBuf)> = OnceLock::new();
    G.get_or_init(|| {
        let state = stack();
        let paths = fleetbench_stack::testing::shared_paths().expect("the shared stack is up");
        let user = fleetbench_stack::process::ServiceUser::detect().unwrap();
        let files = fleetbench_stack::tls::ensure(&paths, user).unwrap();
        let project = fleetbench_stack::ProjectConfig::load(
            &fleetbench_stack::testing::workspace_root().join("supabase"),
        )
        .unwrap();
        let running = fleetbench_gateway::start_with_tls(
            |url| {
                let mut config = GatewayConfig::for_stack(state, &project, url);
                config.realtime.slot = "rt_tls".into();
                let k = state
                    .secrets
                    .signing
                    .as_ref()
                    .expect("the stack's signing key");
                config.keys.signing = Some(
                    fleetbench_gateway::keys::SigningKey::from_pem(&k.kid, &k.private_pem).unwrap(),
                );
                config
            },
            Some(files.clone()),
        )
        .unwrap();
        let url = running.url.clone();
        drop(running);
        let opaque = state.secrets.opaque.as_ref().expect("the stack's new keys");
        let mut g = at(url);
        g.anon = opaque.publishable.clone();
        g.service = opaque.secret.clone();
        (g, files.ca)
    })
}

/// A gateway of its own, on a free port, with `configure` applied to the project's settings.
/// Realtime is off unless `configure` turns it on (with a slot of its own).
pub fn start(configure: impl FnOnce(&mut GatewayConfig)) -> Gateway {
    let running = start_running(|c| {
        c.realtime.enabled = false;
        configure(c)
    });
    let url = running.url.clone();
    drop(running);
    at(url)
}

/// A gateway that can be stopped (`stop`, `kill`).
pub fn start_running(configure: impl FnOnce(&mut GatewayConfig)) -> fleetbench_gateway::Running {
    let state = stack();
    let project = fleetbench_stack::ProjectConfig::load(
        &fleetbench_stack::testing::workspace_root().join("supabase"),
    )
    .unwrap();
    fleetbench_gateway::start(|url| {
        let mut config = GatewayConfig::for_stack(state, &project, url);
        configure(&mut config);
        config
    })
    .unwrap()
}

/// The fixture view of a gateway at `url` on the shared stack.
pub fn at(url: String) -> Gateway {
    let state = stack();
    Gateway {
        url,
        anon: state.secrets.anon_key.clone(),
        service: state.secrets.service_role_key.clone(),
        secret: state.secrets.jwt_secret.clone(),
        db_url: state.direct_db_url(),
    }
}

/// A response: status, headers, and the body as JSON (or a JSON string when it is not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A PostgREST error: this status, this `code`, and the other three keys present.
    #[track_caller]
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(
            (self.status, self.body["code"].as_str()),
            (status, Some(code)),
            "{}",
            self.body
        );
        for key in ["message", "details", "hint"] {
            assert!(self.body.get(key).is_some(), "{key} missing: {}", self.body);
        }
    }
}

impl Gateway {
    pub fn request(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut req = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .header("apikey", &self.anon);
        if let Some(b) = bearer {
            req = req.bearer_auth(b);
        }
        req
    }

    pub async fn send(req: reqwest::RequestBuilder) -> Reply {
        let res = req.send().await.expect("the gateway answers");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.request(method, path, bearer);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = Gateway::send(req).await;
        (r.status, r.body)
    }

    pub async fn create_user(&self, email: &str, password: &str) -> Value {
        let (status, body) = self
            .call(
                Method::POST,
                "/auth/v1/admin/users",
                Some(&self.service),
                Some(
                    json!({ "email": email, "password": password, "email_confirm": true,
                             "app_metadata": { "fleetbench_run_id": "gateway-tests" } }),
                ),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    pub async fn sign_in(&self, email: &str, password: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/auth/v1/token?grant_type=password",
            None,
            Some(json!({ "email": email, "password": password })),
        )
        .await
    }

    /// A direct superuser connection, to check what the API wrote.
    pub async fn db(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.db_url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
    }

    /// A new user, signed in, owning one device created through the Data API.
    pub async fn agent(&self, label: &str) -> Agent {
        let email = unique(label);
        let password = "agent-password-1".to_string();
        let user = self.create_user(&email, &password).await;
        let (status, session) = self.sign_in(&email, &password).await;
        assert_eq!(status, 200, "{session}");
        let token = session["access_token"].as_str().unwrap().to_string();
        let r = Gateway::send(
            self.request(Method::POST, "/rest/v1/devices", Some(&token))
                .header("Prefer", "return=representation")
                .header("Accept", "application/vnd.pgrst.object+json")
                .json(
                    &json!({ "hostname": format!("{label}-host"), "os": "linux", "cpu_cores": 8 }),
                ),
        )
        .await;
        assert_eq!(r.status, 201, "{}", r.body);
        Agent {
            user_id: user["id"].as_str().unwrap().to_string(),
            email,
            password,
            token,
            device_id: r.body["id"].as_str().unwrap().to_string(),
        }
    }
}

pub struct Agent {
    pub user_id: String,
    pub email: String,
    pub password: String,
    pub token: String,
    pub device_id: String,
}

pub fn unique(label: &str) -> String {
    format!("{label}-{}@fleetbench.test", uuid::Uuid::new_v4())
}
