//! The local admin socket: how `kith user …` reaches a running server. redb locks its file for
//! one process, so while `kith run` holds the store the CLI asks the server instead of opening
//! the file. The socket lives in the data directory with mode 0600, so only the user who runs
//! kith (or root) can use it.
//!
//! Protocol: one request line of tab-separated fields (`user-add`, JID, base64 password), then
//! response lines `data\t…` and a final `ok` or `err\t<message>`.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use futures_lite::{AsyncBufReadExt, AsyncWriteExt, StreamExt};
use smol::io::BufReader;
use smol::net::unix::{UnixListener, UnixStream};
use smol::Executor;

use crate::accounts::{self, AccountError};
use crate::server::Server;
use crate::stanza::StreamError;

pub fn socket_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("admin.sock")
}

/// Binds the admin socket, replacing a stale one left by a crash.
pub fn listen(srv: &Server) -> io::Result<Option<UnixListener>> {
    let path = socket_path(&srv.config.data_dir);
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(io::Error::other(format!(
                "another kith is already running with data directory {}",
                srv.config.data_dir.display()
            )));
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path).map_err(|e| {
        io::Error::other(format!(
            "cannot create admin socket {}: {e}",
            path.display()
        ))
    })?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(Some(listener))
}

pub fn cleanup(srv: &Server) {
    let _ = std::fs::remove_file(socket_path(&srv.config.data_dir));
}

pub async fn serve(ex: Arc<Executor<'static>>, srv: Arc<Server>, listener: UnixListener) {
    let mut incoming = listener.incoming();
    while let Some(conn) = incoming.next().await {
        match conn {
            Ok(conn) => {
                let srv = srv.clone();
                ex.spawn(async move {
                    if let Err(e) = handle(&srv, conn).await {
                        log::debug!("admin: connection ended: {e}");
                    }
                })
                .detach();
            }
            Err(e) => log::warn!("admin: accept failed: {e}"),
        }
    }
}

async fn handle(srv: &Server, conn: UnixStream) -> io::Result<()> {
    let mut reader = BufReader::new(conn.clone());
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let fields: Vec<&str> = line.trim_end_matches('\n').split('\t').collect();
    let mut out = String::new();
    match execute(srv, &fields).await {
        Ok(data) => {
            for d in data {
                out.push_str("data\t");
                out.push_str(&d);
                out.push('\n');
            }
            out.push_str("ok\n");
        }
        Err(msg) => {
            out.push_str("err\t");
            out.push_str(&msg.replace('\n', " "));
            out.push('\n');
        }
    }
    let mut conn = conn;
    conn.write_all(out.as_bytes()).await?;
    conn.flush().await
}

async fn execute(srv: &Server, fields: &[&str]) -> Result<Vec<String>, String> {
    let domain = srv.domain();
    let err = |e: AccountError| e.to_string();
    match fields {
        ["user-add", jid, pw] => {
            let jid = accounts::account_jid(jid, domain).map_err(err)?;
            accounts::add(&srv.store, &jid, &decode(pw)?)
                .await
                .map_err(err)?;
            log::info!("admin: account {jid} created");
            // A config circle may have been waiting for this account.
            if !srv.config.circles.is_empty() {
                crate::circles::sync(srv).await;
            }
            Ok(vec![])
        }
        ["user-passwd", jid, pw] => {
            let jid = accounts::account_jid(jid, domain).map_err(err)?;
            accounts::passwd(&srv.store, &jid, &decode(pw)?)
                .await
                .map_err(err)?;
            log::info!("admin: password of {jid} changed");
            Ok(vec![])
        }
        ["user-del", jid] => {
            let jid = accounts::account_jid(jid, domain).map_err(err)?;
            accounts::delete(&srv.store, &jid).await.map_err(err)?;
            srv.mam.forget(&jid);
            srv.kick_account(&jid, StreamError::NotAuthorized);
            log::info!("admin: account {jid} deleted");
            Ok(vec![])
        }
        ["user-list"] => accounts::list(&srv.store).await.map_err(err),
        ["circle-add" | "circle-remove", circle, jid] => {
            let jid = accounts::account_jid(jid, domain).map_err(err)?;
            let changed = if fields[0] == "circle-add" {
                crate::circles::add(srv, circle, &jid).await?
            } else {
                crate::circles::remove(srv, circle, &jid).await?
            };
            log::info!("admin: circle {circle}: {} {jid}", fields[0]);
            Ok(if changed {
                vec![]
            } else {
                vec!["unchanged".into()]
            })
        }
        _ => match crate::invites::admin_request(&srv.store, &srv.config, fields).await {
            Some(r) => r,
            None => {
                Err("unknown admin request (is the CLI the same version as the server?)".into())
            }
        },
    }
}

fn decode(b64: &str) -> Result<String, String> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| "malformed password field".to_string())
}

/// Client side, used by the CLI: `Ok(None)` when no server is listening.
pub fn request(
    data_dir: &std::path::Path,
    fields: &[&str],
) -> io::Result<Option<Result<Vec<String>, String>>> {
    use std::io::{BufRead, Write};
    let path = socket_path(data_dir);
    let mut conn = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => {
            return Err(io::Error::other(format!(
                "cannot reach the running server at {}: {e}",
                path.display()
            )))
        }
    };
    conn.write_all(format!("{}\n", fields.join("\t")).as_bytes())?;
    let mut data = Vec::new();
    for line in io::BufReader::new(conn).lines() {
        let line = line?;
        if let Some(d) = line.strip_prefix("data\t") {
            data.push(d.to_string());
        } else if line == "ok" {
            return Ok(Some(Ok(data)));
        } else if let Some(m) = line.strip_prefix("err\t") {
            return Ok(Some(Err(m.to_string())));
        }
    }
    Err(io::Error::other(
        "the server closed the admin connection without an answer",
    ))
}

pub fn encode_password(pw: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(pw.as_bytes())
}
