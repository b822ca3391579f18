//! The token management page in a real browser: headless Chromium driven over WebDriver
//! (chromedriver + fantoccini) against an in-process server with the management API at
//! `/api/v1` and the page at `/tokens`, on 127.0.0.1.
//!
//! A person's session: a wrong password is refused in words, sign in (Enter in the password
//! field), create a token, read it from the page, use it against the API (200), rotate it in
//! the page (old one refused, new one accepted) after editing its description and metadata
//! in the page (the list shows status, `created_by` and metadata), cancel a revoke, revoke it (confirming the
//! dialog) and see the API refuse it (401), rotate another with a grace period (both
//! accepted), sign out. Nothing is left in the browser's
//! storage.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`; override with `KEYGATE_CHROMIUM` / `KEYGATE_CHROMEDRIVER`).
//! Without them the test fails when `CI` is set and is skipped otherwise. With
//! `KEYGATE_SCREENSHOT` set it saves a screenshot of the page to `docs/ui.png`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use keygate::accounts::{Account, AccountStore, MemoryAccounts, hash_password};
use keygate::axum::management::Management;
use keygate::ui::Page;
use keygate::{MemoryStore, Permissions, Roles, Tokens};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery staple";
/// The longest any one step may take before the test fails.
const STEP: Duration = Duration::from_secs(20);
/// The longest the whole browser session may take.
const SESSION: Duration = Duration::from_secs(240);

// ---- the browser and its driver ----

struct Tools {
    chromium: PathBuf,
    chromedriver: PathBuf,
}

fn find_tool(env: &str, default: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let default = PathBuf::from(default);
    if default.is_file() {
        return Some(default);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

fn tools() -> Result<Tools, String> {
    let chromium = find_tool(
        "KEYGATE_CHROMIUM",
        "/usr/bin/chromium",
        &["chromium", "chromium-browser"],
    )
    .ok_or("chromium not found (apt-get install chromium)")?;
    let chromedriver = find_tool(
        "KEYGATE_CHROMEDRIVER",
        "/usr/bin/chromedriver",
        &["chromedriver"],
    )
    .ok_or("chromedriver not found (apt-get install chromium-driver)")?;
    Ok(Tools {
        chromium,
        chromedriver,
    })
}

/// chromedriver on a free loopback port; killed on drop.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    fn start(path: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        Self { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn open_browser(driver: &ChromeDriver, chromium: &Path, profile: &Path) -> Client {
    let args = [
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--window-size=1280,1000".to_owned(),
        format!("--user-data-dir={}", profile.display()),
    ];
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium, "args": args },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let deadline = Instant::now() + STEP;
    loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&driver.url())
            .await
        {
            Ok(client) => return client,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no WebDriver session from chromedriver: {e}"),
        }
    }
}

// ---- the server ----

async fn start_server() -> SocketAddr {
    let roles = Roles::deployment_platform();
    let tokens = Tokens::builder(MemoryStore::new())
        .roles(roles.clone())
        .build()
        .unwrap();
    let accounts = MemoryAccounts::new();
    accounts
        .put_account(Account {
            email: EMAIL.into(),
            password_hash: hash_password(PASSWORD).unwrap(),
            permissions: Permissions::parse(["*"]).unwrap(),
            created_at: time::OffsetDateTime::now_utc(),
        })
        .await
        .unwrap();
    let app = Router::new()
        .nest("/api/v1", Management::new(tokens, accounts).router())
        .nest("/tokens", Page::new("/api/v1").with_roles(&roles).router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// `GET /api/v1/me` with the bearer token, over a plain TCP connection: status and body.
async fn me(addr: SocketAddr, token: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /api/v1/me HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(STEP, stream.read_to_end(&mut response))
        .await
        .expect("the API answers")
        .unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

// ---- waiting ----

/// Polls `probe` until it gives `Some`, failing after [`STEP`].
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {STEP:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn element(c: &Client, css: &str) -> Element {
    eventually(&format!("element {css}"), || async {
        c.find(Locator::Css(css)).await.ok()
    })
    .await
}

async fn visible(c: &Client, css: &str) -> Element {
    eventually(&format!("{css} to be visible"), || async {
        let e = c.find(Locator::Css(css)).await.ok()?;
        e.is_displayed().await.ok()?.then_some(e)
    })
    .await
}

async fn hidden(c: &Client, css: &str) {
    eventually(&format!("{css} to be hidden"), || async {
        match c.find(Locator::Css(css)).await {
            Ok(e) => (!e.is_displayed().await.ok()?).then_some(()),
            Err(_) => Some(()),
        }
    })
    .await;
}

/// Waits for the `aria-live` status to contain `text`, and returns it.
async fn status_says(c: &Client, text: &str) -> String {
    eventually(&format!("the status to say {text:?}"), || async {
        let s = c
            .find(Locator::Id("status"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        s.contains(text).then_some(s)
    })
    .await
}

async fn input_value(c: &Client, css: &str) -> String {
    element(c, css)
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

async fn click(c: &Client, css: &str) {
    visible(c, css).await.click().await.unwrap();
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

/// Waits for the new-token panel to show a token other than `previous`, and returns it.
async fn shown_token(c: &Client, previous: Option<&str>) -> String {
    visible(c, "#new-token").await;
    eventually("a new token in the page", || async {
        let v = input_value(c, "#new-token-value").await;
        (!v.is_empty() && Some(v.as_str()) != previous).then_some(v)
    })
    .await
}

async fn row_button(c: &Client, token: &str, action: &str) -> Element {
    let hint = format!("{}…", &token[..12]);
    let xpath = format!("//tr[.//code[text()='{hint}']]//button[@data-action='{action}']");
    eventually(&format!("the {action} button of {hint}"), || async {
        let e = c.find(Locator::XPath(&xpath)).await.ok()?;
        e.is_displayed().await.ok()?.then_some(e)
    })
    .await
}

async fn create_token(c: &Client, name: &str, description: &str, role: &str, expires: &str) {
    let field = visible(c, "#name").await;
    field.send_keys(name).await.unwrap();
    element(c, "#description")
        .await
        .send_keys(description)
        .await
        .unwrap();
    element(c, "#role")
        .await
        .select_by_value(role)
        .await
        .unwrap();
    element(c, "#expires")
        .await
        .select_by_value(expires)
        .await
        .unwrap();
    click(c, "#create-submit").await;
}

// ---- the session ----

async fn session(c: Client, addr: SocketAddr) {
    let base = format!("http://{addr}");
    c.goto(&format!("{base}/tokens")).await.unwrap();
    element(&c, "body[data-ready='true']").await;
    assert_eq!(c.title().await.unwrap(), "API tokens");

    // A wrong password is refused, in words.
    visible(&c, "#email").await.send_keys(EMAIL).await.unwrap();
    let password = element(&c, "#password").await;
    password.send_keys("not the password").await.unwrap();
    click(&c, "#sign-in-submit").await;
    status_says(&c, "Invalid email or password").await;
    assert!(!element(&c, "#create").await.is_displayed().await.unwrap());

    // Sign in with the keyboard: Enter in the password field.
    password.clear().await.unwrap();
    let mut keys = PASSWORD.to_owned();
    keys.push(char::from(Key::Enter));
    password.send_keys(&keys).await.unwrap();
    status_says(&c, &format!("Signed in as {EMAIL}")).await;
    visible(&c, "#create").await;
    hidden(&c, "#sign-in").await;
    assert_eq!(
        input_value(&c, "#password").await,
        "",
        "password field wiped"
    );
    assert_eq!(
        element(&c, "#account-email").await.text().await.unwrap(),
        EMAIL
    );
    visible(&c, "#empty").await;

    // A first token, to have a list.
    create_token(
        &c,
        "nightly-report",
        "Reads the logs at night",
        "viewer",
        "604800",
    )
    .await;
    let nightly = shown_token(&c, None).await;
    click(&c, "#new-token-done").await;
    hidden(&c, "#new-token").await;

    // Create the token under test; it is shown once, with the warning.
    create_token(&c, "ci-deploy", "Deploys from CI", "deployer", "2592000").await;
    let token = shown_token(&c, None).await;
    assert_ne!(token, nightly);
    status_says(&c, "you won't see it again").await;
    let panel = visible(&c, "#new-token").await.text().await.unwrap();
    assert!(panel.contains("you won't see it again"), "{panel}");
    assert!(panel.contains("ci-deploy"), "{panel}");

    // The list shows it: name, role, hint, status, expiry, never used.
    row_button(&c, &token, "revoke").await;
    let rows = js(
        &c,
        "return [...document.querySelectorAll('#tokens tr')].map(r => r.innerText)",
    )
    .await;
    let rows: Vec<String> = serde_json::from_value(rows).unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let ci = rows.iter().find(|r| r.contains("ci-deploy")).unwrap();
    for part in [
        "Deploys from CI",
        "deployer",
        "releases:create",
        &format!("{}…", &token[..12]),
        "active",
        EMAIL,
        "never",
    ] {
        assert!(ci.contains(part), "{part:?} in {ci:?}");
    }
    assert!(!ci.contains(&token), "the list shows only the hint");

    // Nothing kept by the browser.
    let storage = js(
        &c,
        "return [localStorage.length, sessionStorage.length, document.cookie]",
    )
    .await;
    assert_eq!(storage, json!([0, 0, ""]));

    if std::env::var_os("KEYGATE_SCREENSHOT").is_some() {
        // Tall enough for the whole page.
        let height = js(&c, "return document.documentElement.scrollHeight").await;
        let height = u32::try_from(height.as_u64().unwrap_or(1000)).unwrap_or(1000);
        c.set_window_size(1280, height + 200).await.unwrap();
        let png = c.screenshot().await.unwrap();
        c.set_window_size(1280, 1000).await.unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ui.png");
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot saved to {}", path.display());
    }

    // The token works against the API.
    let (status, body) = me(addr, &token).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("ci-deploy"), "{body}");

    // Dismissed, it is gone from the page.
    click(&c, "#new-token-done").await;
    hidden(&c, "#new-token").await;
    assert_eq!(input_value(&c, "#new-token-value").await, "");
    let page_text = js(&c, "return document.documentElement.innerText").await;
    assert!(!page_text.as_str().unwrap().contains(&token));

    // Edit it in the page: a new description and metadata, saved with PATCH.
    row_button(&c, &token, "edit").await.click().await.unwrap();
    visible(&c, "dialog#edit[open]").await;
    assert_eq!(input_value(&c, "#edit-name").await, "ci-deploy");
    let description = element(&c, "#edit-description").await;
    description.clear().await.unwrap();
    description.send_keys("Deploys main from CI").await.unwrap();
    element(&c, "#edit-metadata")
        .await
        .send_keys(r#"{"team": "platform"}"#)
        .await
        .unwrap();
    click(&c, "#edit-save").await;
    status_says(&c, "saved").await;
    hidden(&c, "dialog#edit").await;
    eventually("the edit in the list", || async {
        let rows = js(
            &c,
            "return [...document.querySelectorAll('#tokens tr')].map(r => r.innerText)",
        )
        .await;
        let rows: Vec<String> = serde_json::from_value(rows).ok()?;
        rows.iter()
            .find(|r| r.contains("ci-deploy"))
            .filter(|r| r.contains("Deploys main from CI") && r.contains(r#""team":"platform""#))
            .cloned()
    })
    .await;
    assert_eq!(me(addr, &token).await.0, 200, "an edit keeps the secret");

    // Rotate in the page, without grace: the old token stops, the new one works.
    row_button(&c, &token, "rotate")
        .await
        .click()
        .await
        .unwrap();
    visible(&c, "dialog#confirm[open]").await;
    let title = element(&c, "#confirm-title").await.text().await.unwrap();
    assert_eq!(title, "Rotate token ci-deploy?");
    visible(&c, "#grace").await;
    click(&c, "#confirm-ok").await;
    let rotated = shown_token(&c, Some(&token)).await;
    status_says(&c, "rotated").await;
    assert_eq!(me(addr, &token).await.0, 401, "the old token is refused");
    assert_eq!(me(addr, &rotated).await.0, 200, "the new token works");
    click(&c, "#new-token-done").await;

    // Cancelling a revoke changes nothing.
    row_button(&c, &rotated, "revoke")
        .await
        .click()
        .await
        .unwrap();
    visible(&c, "dialog#confirm[open]").await;
    click(&c, "#confirm-cancel").await;
    hidden(&c, "dialog#confirm").await;
    status_says(&c, "Nothing changed").await;
    assert_eq!(me(addr, &rotated).await.0, 200);

    // Revoke, confirming the dialog: the API refuses the token from then on.
    row_button(&c, &rotated, "revoke")
        .await
        .click()
        .await
        .unwrap();
    visible(&c, "dialog#confirm[open]").await;
    let text = element(&c, "#confirm-text").await.text().await.unwrap();
    assert!(text.contains("cannot be undone"), "{text}");
    assert!(!element(&c, "#grace").await.is_displayed().await.unwrap());
    click(&c, "#confirm-ok").await;
    status_says(&c, "Token ci-deploy revoked").await;
    let (status, body) = me(addr, &rotated).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("invalid_token"), "{body}");
    eventually("the revoked token to leave the list", || async {
        let hint = format!("{}…", &rotated[..12]);
        let text = js(&c, "return document.getElementById('tokens').innerText").await;
        (!text.as_str()?.contains(&hint)).then_some(())
    })
    .await;
    assert_eq!(
        me(addr, &nightly).await.0,
        200,
        "the other token still works"
    );

    // Rotate with a grace period, confirmed with Enter in the grace field: both work for
    // now, and the old one is listed as replaced.
    row_button(&c, &nightly, "rotate")
        .await
        .click()
        .await
        .unwrap();
    visible(&c, "dialog#confirm[open]").await;
    let grace = visible(&c, "#grace").await;
    grace.clear().await.unwrap();
    let mut keys = "600".to_owned();
    keys.push(char::from(Key::Enter));
    grace.send_keys(&keys).await.unwrap();
    let nightly2 = shown_token(&c, None).await;
    assert_ne!(nightly2, nightly);
    assert_eq!(
        me(addr, &nightly).await.0,
        200,
        "old token within its grace"
    );
    assert_eq!(me(addr, &nightly2).await.0, 200, "new token");
    eventually("the old token to be listed as replaced", || async {
        let hint = format!("{}…", &nightly[..12]);
        let rows = js(
            &c,
            "return [...document.querySelectorAll('#tokens tr')].map(r => r.innerText)",
        )
        .await;
        let rows: Vec<String> = serde_json::from_value(rows).ok()?;
        rows.iter()
            .any(|r| r.contains(&hint) && r.contains("replaced"))
            .then_some(())
    })
    .await;
    click(&c, "#new-token-done").await;

    // Sign out: back to the form, nothing kept.
    click(&c, "#sign-out").await;
    visible(&c, "#sign-in").await;
    hidden(&c, "#create").await;
    hidden(&c, "#list").await;
    assert_eq!(
        js(
            &c,
            "return [localStorage.length, sessionStorage.length, document.cookie]"
        )
        .await,
        json!([0, 0, ""])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_manages_tokens_in_headless_chromium() {
    let tools = match tools() {
        Ok(tools) => tools,
        Err(why) if std::env::var_os("CI").is_some() => {
            panic!("the browser test needs chromium and chromedriver under CI: {why}")
        }
        Err(why) => {
            eprintln!("skipping the browser test: {why}");
            return;
        }
    };
    let addr = start_server().await;
    let driver = ChromeDriver::start(&tools.chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let client = open_browser(&driver, &tools.chromium, profile.path()).await;

    // Run the session in its own task so that a failed assertion still closes the browser.
    // A WebDriver command has no deadline of its own: bound the whole session too.
    let task = tokio::spawn(session(client.clone(), addr));
    let abort = task.abort_handle();
    let outcome = tokio::time::timeout(SESSION, task).await;
    abort.abort();
    let _ = tokio::time::timeout(STEP, client.close()).await;
    drop(driver);
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("the browser session did not finish: {e}"),
        Err(_) => panic!("the browser session took longer than {SESSION:?}"),
    }
}
