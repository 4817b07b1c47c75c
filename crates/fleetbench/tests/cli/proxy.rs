//! An HTTP `CONNECT` proxy for the tests that check fleetbench's clients honour `HTTPS_PROXY`.

/// An HTTP `CONNECT` proxy on 127.0.0.1, on threads of its own (the test's runtime is busy
/// waiting for fleetbench): which targets it tunnelled to and how many bytes went upstream.
pub struct ConnectProxy {
    pub url: String,
    state: std::sync::Arc<(std::sync::Mutex<Tunnels>, std::sync::Condvar)>,
}

#[derive(Default)]
struct Tunnels {
    targets: Vec<String>,
    upstream_bytes: u64,
    open: usize,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = std::sync::Arc::new((
            std::sync::Mutex::new(Tunnels::default()),
            std::sync::Condvar::new(),
        ));
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || tunnel(client, &state));
            }
        });
        ConnectProxy { url, state }
    }

    /// Once every tunnel has closed: the targets and the bytes sent upstream.
    pub fn settled(&self) -> (Vec<String>, u64) {
        let (lock, closed) = &*self.state;
        let t = closed
            .wait_while(lock.lock().unwrap(), |t| t.open > 0)
            .unwrap();
        (t.targets.clone(), t.upstream_bytes)
    }
}

/// One tunnel: `CONNECT host:port`, `200`, then bytes both ways until both sides close.
fn tunnel(
    mut client: std::net::TcpStream,
    state: &(std::sync::Mutex<Tunnels>, std::sync::Condvar),
) {
    use std::io::{Read, Write};
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split(' ').nth(1).unwrap_or_default().to_string();
    let Ok(mut upstream) = std::net::TcpStream::connect(&target) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n");
        return;
    };
    {
        let mut t = state.0.lock().unwrap();
        t.targets.push(target);
        t.open += 1;
    }
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .unwrap();
    let (mut from_up, mut to_client) = (upstream.try_clone().unwrap(), client.try_clone().unwrap());
    let down = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_up, &mut to_client);
        let _ = to_client.shutdown(std::net::Shutdown::Write);
    });
    let up = std::io::copy(&mut client, &mut upstream).unwrap_or(0);
    let _ = upstream.shutdown(std::net::Shutdown::Write);
    let _ = down.join();
    let mut t = state.0.lock().unwrap();
    t.upstream_bytes += up;
    t.open -= 1;
    state.1.notify_all();
}
