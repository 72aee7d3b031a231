//! The local admin socket: how `kith user …` reaches a running server. redb locks its file for
//! one process, so while `kith run` holds the store the CLI asks the server instead of opening
//! the file. The socket lives in the data directory with mode 0600, so only the user who runs
//! kith (or root) can use it.
//!
//! Protocol: one request line of tab-separated fields (`user-add`, JID, base64 password; or
//! `backup`, absolute path, `uploads`/`no-uploads`), then response lines `data\t…` and a final
//! `ok` or `err\t<message>`. A backup is written by the server process (it holds the store's
//! lock), so the path must be writable by the user kith runs as. `user-import` is followed by
//! pairs of JID and base64 credentials, derived by the CLI.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use futures_lite::{AsyncBufReadExt, AsyncWriteExt, StreamExt};
use smol::io::BufReader;
use smol::net::unix::{UnixListener, UnixStream};
use smol::Executor;

use crate::accounts::{self, AccountError, Reuse};
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
        [op @ ("user-add" | "user-add-force"), jid, pw] => {
            let jid = accounts::account_jid(jid, domain).map_err(err)?;
            let reuse = match *op {
                "user-add-force" => Reuse::Force,
                _ => Reuse::configured(&srv.config.registration),
            };
            accounts::add(&srv.store, &jid, &decode(pw)?, reuse)
                .await
                .map_err(err)?;
            log::info!("admin: account {jid} created");
            // A config circle may have been waiting for this account.
            if !srv.config.circles.is_empty() {
                crate::circles::sync(srv).await;
            }
            Ok(vec![])
        }
        ["user-tombstones"] => accounts::tombstones(&srv.store).await.map_err(err),
        ["user-tombstone-clear", jid] => {
            let jid = accounts::account_jid(jid, domain).map_err(err)?;
            accounts::clear_tombstone(&srv.store, &jid)
                .await
                .map_err(err)?;
            log::info!("admin: tombstone of {jid} cleared");
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
        [op @ ("user-import" | "user-import-force"), rest @ ..] => {
            // The CLI derived the credentials (on its own cores, not the server's executor).
            let items = crate::user_import::decode_request(rest, domain)?;
            let n = items.len();
            let reuse = match *op {
                "user-import-force" => Reuse::Force,
                _ => Reuse::configured(&srv.config.registration),
            };
            accounts::import(&srv.store, items, reuse)
                .await
                .map_err(|e| e.to_string())?;
            log::info!("admin: {n} accounts imported");
            Ok(vec![n.to_string()])
        }
        ["user-names-held"] => {
            accounts::names_held(&srv.store, Reuse::configured(&srv.config.registration))
                .await
                .map_err(|e| e.to_string())
        }
        ["export"] => crate::migrate::export_lines(&srv.store, domain).await,
        ["import", files @ ..] => {
            let done = crate::migrate::import_files(
                &srv.store,
                domain,
                Reuse::configured(&srv.config.registration),
                files,
            )
            .await?;
            log::info!("admin: {}", done.join("; "));
            Ok(done)
        }
        ["backup", dest, uploads] => {
            let (store, data_dir) = (srv.store.clone(), srv.config.data_dir.clone());
            let dest = PathBuf::from(dest);
            let with_uploads = *uploads == "uploads";
            let info = smol::unblock(move || {
                crate::backup::create(&store, &data_dir, &dest, with_uploads)
                    .map(|info| crate::backup::describe(&info, &dest))
            })
            .await?;
            log::info!("admin: {info}");
            Ok(vec![info])
        }
        ["user-list-seen"] => {
            let online = |jid: &crate::jid::BareJid| srv.sessions.is_online(jid);
            user_list_seen(&srv.store, &online).await
        }
        ["user-export", jid] => {
            let jid = accounts::account_jid(jid, domain).map_err(err)?;
            user_export(&srv.store, domain, &jid).await
        }
        ["announce", text] => {
            if !srv.config.modules.announce {
                return Err("announcements are disabled ([modules] announce = false)".into());
            }
            let n = crate::services::announce::announce(srv, None, &decode(text)?);
            Ok(vec![n.to_string()])
        }
        ["motd-set", text] => crate::services::announce::set_motd(&srv.store, &decode(text)?)
            .await
            .map(|_| vec![])
            .map_err(|e| e.to_string()),
        ["motd-show"] => motd_lines(&srv.store).await,
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

/// `user-list-seen`: one `JID<TAB>last seen` line per account, where last seen is `online
/// now`, the RFC 3339 time of the last logout, or `never`.
pub async fn user_list_seen(
    store: &crate::store::Store,
    online: &(dyn Fn(&crate::jid::BareJid) -> bool + Sync),
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for jid in accounts::list(store).await.map_err(|e| e.to_string())? {
        let now = crate::jid::BareJid::parse(&jid).is_ok_and(|b| online(&b));
        let seen = accounts::seen(store, &jid, now)
            .await
            .map_err(|e| e.to_string())?;
        out.push(format!("{jid}\t{seen}"));
    }
    Ok(out)
}

/// `user-export`: the account's XEP-0227 document, base64 in one line (it holds newlines).
pub async fn user_export(
    store: &crate::store::Store,
    domain: &str,
    jid: &crate::jid::BareJid,
) -> Result<Vec<String>, String> {
    match crate::export::export_user(store, jid).await {
        Ok(Some(user)) => {
            let doc = crate::export::document(domain, vec![user]);
            let xml = format!("<?xml version='1.0' encoding='UTF-8'?>\n{doc}\n");
            Ok(vec![encode_password(&xml)])
        }
        Ok(None) => Err(format!("no account {jid}")),
        Err(e) => Err(e.to_string()),
    }
}

/// `motd-show`: the MOTD's lines (none when unset).
pub async fn motd_lines(store: &crate::store::Store) -> Result<Vec<String>, String> {
    match crate::services::announce::motd(store).await {
        Ok(m) => Ok(m
            .map(|(_, t)| t.lines().map(str::to_string).collect())
            .unwrap_or_default()),
        Err(e) => Err(e.to_string()),
    }
}

/// A base64 text field (passwords, announcements: anything that may hold tabs or newlines).
fn decode(b64: &str) -> Result<String, String> {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| "malformed text field".to_string())
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
