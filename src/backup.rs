//! `kith backup` and `kith restore`: what of the data directory a backup holds and how a
//! restore puts it back. The redb side (snapshot, file format, validation) is
//! `store::backup`; this module chooses the files and does the renames.
//!
//! A backup holds the whole store (accounts, rosters, archives, PEP, and any table added
//! later), `dialback.secret` and `turn.secret` (TURN credentials already handed to clients and
//! the dialback keys peers cached keep working), and with `--with-uploads` the uploaded files.
//! Not included, on purpose: `acme/` and `tls/` (certificates are fetched or made again at
//! start), `admin.sock`, and the config file, which lives outside the data directory.

use std::path::{Path, PathBuf};

use crate::store::{self, BackupInfo, ExtraFile, Store};

/// Data-directory files every backup carries when they exist.
pub const SECRET_FILES: [&str; 2] = ["dialback.secret", "turn.secret"];

/// The store's file inside the data directory.
pub fn store_path(data_dir: &Path) -> PathBuf {
    data_dir.join("kith.redb")
}

/// Writes a backup of `store` (the data directory `data_dir`) to `dest`. Blocking.
pub fn create(
    store: &Store,
    data_dir: &Path,
    dest: &Path,
    with_uploads: bool,
) -> Result<BackupInfo, String> {
    // A secret that was never made (TURN off, no federation yet) is simply not in the backup.
    let extra: Vec<ExtraFile> = SECRET_FILES
        .iter()
        .filter(|name| data_dir.join(name).exists())
        .map(|name| ExtraFile {
            rel: (*name).to_string(),
            path: data_dir.join(name),
        })
        .collect();
    let uploads = data_dir.join("upload");
    store
        .backup_to(dest, &extra, with_uploads.then_some(uploads.as_path()))
        .map_err(|e| e.to_string())
}

/// One line for the admin: what went into a backup.
pub fn describe(info: &BackupInfo, dest: &Path) -> String {
    let mut s = format!(
        "backup {}: {} tables, schema {}, files: {}",
        dest.display(),
        info.tables,
        info.schema_version,
        if info.files.is_empty() {
            "none".to_string()
        } else {
            summarize_files(&info.files)
        }
    );
    if !info.skipped.is_empty() {
        s.push_str(&format!(
            " (skipped, deleted while the backup ran: {})",
            info.skipped.join(", ")
        ));
    }
    s
}

fn summarize_files(files: &[String]) -> String {
    let uploads = files.iter().filter(|f| f.starts_with("upload/")).count();
    let mut named: Vec<&str> = files
        .iter()
        .filter(|f| !f.starts_with("upload/"))
        .map(String::as_str)
        .collect();
    let upload_text = format!("{uploads} uploaded files");
    if uploads > 0 {
        named.push(&upload_text);
    }
    named.join(", ")
}

/// Replaces the data directory's store and secrets with the backup's. The server must be
/// stopped (the caller checks the admin socket; the store's lock is checked here too). The old
/// store and secrets are kept as `NAME.before-restore-UNIXTIME`. Blocking.
pub fn restore(backup: &Path, data_dir: &Path) -> Result<(BackupInfo, Vec<String>), String> {
    let live = store_path(data_dir);
    if live.exists() {
        // redb's lock says whether a server has the file open right now.
        match Store::open(&live) {
            Ok(s) => s.close(),
            Err(store::StoreError::Locked(_)) => {
                return Err(format!(
                    "{} is in use: stop kith first (systemctl stop kith), then restore",
                    live.display()
                ))
            }
            // A damaged store is a reason to restore, not a reason to refuse.
            Err(_) => {}
        }
    }
    let info = store::inspect_backup(backup).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let incoming = data_dir.join("kith.redb.restoring");
    let _ = std::fs::remove_file(&incoming);
    let cleanup = |info: &BackupInfo| {
        let _ = std::fs::remove_file(&incoming);
        for rel in &info.files {
            let _ = std::fs::remove_file(store::restoring_path(data_dir, rel));
        }
    };
    if let Err(e) = store::restore_into(backup, &incoming, data_dir) {
        cleanup(&info);
        return Err(e.to_string());
    }
    // Everything is written and synced; now the renames, the old files kept aside.
    let stamp = crate::time::now_unix();
    let mut kept = Vec::new();
    let mut put_in_place = |from: PathBuf, to: PathBuf| -> Result<(), String> {
        if to.exists() {
            let aside = PathBuf::from(format!("{}.before-restore-{stamp}", to.display()));
            std::fs::rename(&to, &aside)
                .map_err(|e| format!("cannot move {} aside: {e}", to.display()))?;
            kept.push(aside.display().to_string());
        }
        std::fs::rename(&from, &to)
            .map_err(|e| format!("cannot move {} into place: {e}", to.display()))
    };
    put_in_place(incoming.clone(), live.clone())?;
    for rel in &info.files {
        put_in_place(store::restoring_path(data_dir, rel), data_dir.join(rel))?;
    }
    // Makes the renames durable (best effort: some filesystems refuse fsync on directories).
    if let Ok(d) = std::fs::File::open(data_dir) {
        let _ = d.sync_all();
    }
    Ok((info, kept))
}
