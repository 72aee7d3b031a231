//! Backup files: a consistent snapshot of every table plus a few files of the data directory,
//! in one redb file that says what it is.
//!
//! A backup is a redb file holding every table of the store under its own name and type (so a
//! restore is a copy back, and the copy opens with [`super::Store::open`] like any data file),
//! plus two tables of its own: `kith_backup_meta` (format, schema version, kith version,
//! creation time) and `kith_backup_files` (relative path and chunk number → bytes: the secrets
//! and, when asked, the uploaded files). A file without `kith_backup_meta` is refused with a
//! message that says what it is instead.
//!
//! Tables are found with redb's table listing, never named here, so a table added to `schema`
//! is backed up without a change to this file. redb opens a table only with its exact key and
//! value types, so [`copy_table_untyped`] tries the types kith's tables use
//! ([`KEY_TYPES`]×[`VALUE_TYPES`]); a table with a type outside that list fails the backup with
//! its name (and the unit test that backs up a fresh store, which has every table, fails first).
//!
//! Consistency: the store side is read in one read transaction, so it is the state after one
//! commit; writers go on meanwhile (redb keeps the snapshot's pages alive). Upload files listed
//! in that snapshot are immutable once recorded; one expired between the snapshot and the copy
//! is skipped and named in [`BackupInfo::skipped`].

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use redb::{
    Database, Key, MultimapTableHandle, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTable, TableDefinition, TableError, TableHandle, Value, WriteTransaction,
};

use super::codec::{decode_u64, encode_u64};
use super::schema::{SCHEMA_VERSION, UPLOADS};
use super::{begin_write, now_unix, Store, StoreError, CACHE_BYTES};

/// The layout of backup files this build writes and reads.
pub const BACKUP_FORMAT: u64 = 1;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("kith_backup_meta");
const FILES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("kith_backup_files");
const BACKUP_PREFIX: &str = "kith_backup_";
/// Files are stored in chunks so neither side holds a whole upload in memory.
const CHUNK: usize = 1 << 20;

/// What a backup holds, read from its `kith_backup_meta` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupInfo {
    pub format: u64,
    pub schema_version: u64,
    pub kith_version: String,
    pub created_unix: u64,
    /// Tables of the store copied (not counting the backup's own).
    pub tables: usize,
    /// Paths relative to the data directory, as stored.
    pub files: Vec<String>,
    /// Upload files listed in the snapshot but gone before they could be copied.
    pub skipped: Vec<String>,
}

/// A data-directory file to put into a backup: its path relative to the data directory.
pub struct ExtraFile {
    pub rel: String,
    pub path: PathBuf,
}

impl Store {
    /// Writes a backup of this store to `dest` (which must not exist): every table from one
    /// read transaction, the `extra` files, and with `uploads_dir` the files of every upload
    /// recorded in that snapshot (as `upload/ID`). Written to a temporary name beside `dest`,
    /// fsynced, then renamed, so `dest` is either absent or complete.
    ///
    /// Blocking (it copies the whole database): run it through `unblock`.
    pub fn backup_to(
        &self,
        dest: &Path,
        extra: &[ExtraFile],
        uploads_dir: Option<&Path>,
    ) -> Result<BackupInfo, StoreError> {
        if dest.exists() {
            return Err(StoreError::Io(format!(
                "{} already exists; choose a new file name (a backup never overwrites a file)",
                dest.display()
            )));
        }
        // Not `DataFile::run`: the errors of writing the backup are not the data file's.
        let db = self.inner.file.handle()?;
        let snapshot = db
            .begin_read()
            .map_err(|e| StoreError::from(e).at(&self.inner.file.path))?;
        let mut files: Vec<ExtraFile> = extra
            .iter()
            .map(|f| ExtraFile {
                rel: f.rel.clone(),
                path: f.path.clone(),
            })
            .collect();
        if let Some(dir) = uploads_dir {
            for row in snapshot.open_table(UPLOADS)?.iter()? {
                let id = row?.0.value().to_string();
                files.push(ExtraFile {
                    rel: format!("upload/{id}"),
                    path: dir.join(&id),
                });
            }
        }
        let tmp = temp_beside(dest);
        let result = write_backup(&snapshot, &tmp, &files).and_then(|info| {
            std::fs::rename(&tmp, dest)
                .map_err(|e| io_err("cannot rename the finished backup into place", dest, e))?;
            sync_parent(dest);
            Ok(info)
        });
        if result.is_err() {
            // Never leave a half-written backup that looks like a good one.
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Reads a backup's description, refusing anything that is not a backup this kith can restore.
pub fn inspect(backup: &Path) -> Result<BackupInfo, StoreError> {
    let db = open_backup(backup)?;
    let txn = db.begin_read()?;
    read_info(&txn, backup)
}

/// Restores the store part of `backup` into a new data file `dest` (which must not exist) and
/// writes its files under `files_dir` with the suffix `.restoring` (the caller renames them
/// when everything succeeded). Opens the result with [`Store::open`] so an older schema is
/// migrated now, not at the next start. Returns the backup's description and the files written
/// (relative paths).
///
/// Blocking.
pub fn restore_into(
    backup: &Path,
    dest: &Path,
    files_dir: &Path,
) -> Result<BackupInfo, StoreError> {
    if dest.exists() {
        return Err(StoreError::Io(format!(
            "{} already exists; remove it first",
            dest.display()
        )));
    }
    let db = open_backup(backup)?;
    let src = db.begin_read()?;
    let info = read_info(&src, backup)?;
    let out = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(dest)
        .map_err(|e| StoreError::from(e).at(dest))?;
    let txn = begin_write(&out).map_err(|e| e.at(dest))?;
    match copy_all(&src, &txn) {
        Ok(_) => txn.commit().map_err(|e| StoreError::from(e).at(dest))?,
        Err(e) => {
            let _ = txn.abort();
            return Err(e.at(dest));
        }
    }
    drop(out);
    let files = src.open_table(FILES)?;
    let mut current: Option<(String, File)> = None;
    for row in files.iter()? {
        let (k, v) = row?;
        let (rel, _chunk) = k.value();
        if current.as_ref().map(|(r, _)| r.as_str()) != Some(rel) {
            // `read_info` checked the paths of first chunks; a row without one is checked here.
            check_rel(rel)?;
            if let Some((r, f)) = current.take() {
                finish_file(f, &restoring_path(files_dir, &r))?;
            }
            let target = restoring_path(files_dir, rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| io_err("cannot create directory", parent, e))?;
            }
            let f = create_private(&target)?;
            current = Some((rel.to_string(), f));
        }
        if let Some((_, f)) = current.as_mut() {
            f.write_all(v.value())
                .map_err(|e| io_err("cannot write restored file", files_dir, e))?;
        }
    }
    if let Some((r, f)) = current.take() {
        finish_file(f, &restoring_path(files_dir, &r))?;
    }
    Store::open(dest)?.close();
    Ok(info)
}

/// Where [`restore_into`] writes the file `rel` of a backup before the caller renames it.
pub fn restoring_path(files_dir: &Path, rel: &str) -> PathBuf {
    files_dir.join(format!("{rel}.restoring"))
}

fn write_backup(
    snapshot: &ReadTransaction,
    tmp: &Path,
    files: &[ExtraFile],
) -> Result<BackupInfo, StoreError> {
    let out = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(tmp)
        .map_err(|e| StoreError::from(e).at(tmp))?;
    let txn = begin_write(&out).map_err(|e| e.at(tmp))?;
    let written = (|| -> Result<BackupInfo, StoreError> {
        let tables = copy_all(snapshot, &txn)?;
        let mut stored = Vec::new();
        let mut skipped = Vec::new();
        {
            let mut table = txn.open_table(FILES)?;
            for f in files {
                match store_file(&mut table, f)? {
                    true => stored.push(f.rel.clone()),
                    false => skipped.push(f.rel.clone()),
                }
            }
        }
        let schema_version = match snapshot
            .open_table(super::schema::META)?
            .get("schema_version")?
        {
            Some(v) => decode_u64(v.value())
                .map_err(|e| StoreError::Corrupt(format!("meta schema_version: {e}")))?,
            None => SCHEMA_VERSION,
        };
        let info = BackupInfo {
            format: BACKUP_FORMAT,
            schema_version,
            kith_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix: now_unix(),
            tables,
            files: stored,
            skipped,
        };
        let mut meta = txn.open_table(META)?;
        meta.insert("format", encode_u64(info.format).as_slice())?;
        meta.insert("schema_version", encode_u64(info.schema_version).as_slice())?;
        meta.insert("kith_version", info.kith_version.as_bytes())?;
        meta.insert("created_unix", encode_u64(info.created_unix).as_slice())?;
        meta.insert("tables", encode_u64(tables as u64).as_slice())?;
        Ok(info)
    })();
    match written {
        Ok(info) => {
            txn.commit().map_err(|e| StoreError::from(e).at(tmp))?;
            Ok(info)
        }
        Err(e) => {
            let _ = txn.abort();
            Err(e.at(tmp))
        }
    }
}

/// Copies `f` in chunks; `false` when it does not exist (an upload expired meanwhile).
fn store_file(
    table: &mut redb::Table<(&str, u64), &[u8]>,
    f: &ExtraFile,
) -> Result<bool, StoreError> {
    let mut file = match File::open(&f.path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err("cannot read", &f.path, e)),
    };
    let mut buf = vec![0; CHUNK];
    let mut chunk = 0u64;
    loop {
        let mut filled = 0;
        while filled < CHUNK {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("cannot read", &f.path, e)),
            }
        }
        // An empty file still gets one (empty) chunk, so it is restored.
        if filled > 0 || chunk == 0 {
            table.insert((f.rel.as_str(), chunk), &buf[..filled])?;
            chunk += 1;
        }
        if filled < CHUNK {
            return Ok(true);
        }
    }
}

/// Copies every store table of `src` into `dst` (skipping a backup's own tables); returns how
/// many.
fn copy_all(src: &ReadTransaction, dst: &WriteTransaction) -> Result<usize, StoreError> {
    if let Some(t) = src.list_multimap_tables()?.next() {
        return Err(StoreError::Io(format!(
            "internal error: backup cannot copy multimap table {}",
            t.name()
        )));
    }
    let names: Vec<String> = src
        .list_tables()?
        .map(|t| t.name().to_string())
        .filter(|n| !n.starts_with(BACKUP_PREFIX))
        .collect();
    for name in &names {
        copy_table_untyped(src, dst, name)?;
    }
    Ok(names.len())
}

/// Key types of kith's tables. A table keyed by anything else fails the backup by name.
macro_rules! key_types {
    ($m:ident!($($args:tt)*)) => {
        $m!($($args)*; &'static str, u64, u128, &'static [u8], (&'static str, &'static str),
            (&'static str, u64), (u64, &'static str), (&'static str, &'static str, u64),
            (&'static str, &'static str, &'static str), (&'static str, u64, &'static str))
    };
}

/// Value types of kith's tables.
macro_rules! for_value_types {
    ($src:ident, $dst:ident, $name:ident; $k:ty) => {
        for_value_types!(@ $src, $dst, $name, $k; &'static [u8], u64, (), &'static str, bool,
            u32, (&'static str, &'static [u8]))
    };
    (@ $src:ident, $dst:ident, $name:ident, $k:ty; $($v:ty),*) => {
        $( if copy_typed::<$k, $v>($src, $dst, $name)? { return Ok(()); } )*
    };
}

macro_rules! try_all {
    ($src:ident, $dst:ident, $name:ident; $($k:ty),*) => {
        $( for_value_types!($src, $dst, $name; $k); )*
    };
}

/// Copies the table `name` whatever its types (among [`key_types`] × value types).
fn copy_table_untyped(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    name: &str,
) -> Result<(), StoreError> {
    key_types!(try_all!(src, dst, name));
    Err(StoreError::Io(format!(
        "internal error: backup does not know the key/value types of table {name}; \
         add them to store::backup's type lists"
    )))
}

/// Copies `name` if its stored types are `K`, `V`; `false` when they are not.
fn copy_typed<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    name: &str,
) -> Result<bool, StoreError> {
    let def = TableDefinition::<K, V>::new(name);
    let from = match src.open_table(def) {
        Ok(t) => t,
        Err(TableError::TableTypeMismatch { .. } | TableError::TypeDefinitionChanged { .. }) => {
            return Ok(false)
        }
        Err(e) => return Err(e.into()),
    };
    let mut to = dst.open_table(def)?;
    for row in from.iter()? {
        let (k, v) = row?;
        to.insert(k.value(), v.value())?;
    }
    Ok(true)
}

fn open_backup(path: &Path) -> Result<ReadOnlyDatabase, StoreError> {
    let not_backup = |why: String| {
        StoreError::Io(format!(
            "{} is not a kith backup ({why}); give a file made by `kith backup`",
            path.display()
        ))
    };
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(not_backup("not a regular file".into())),
        Err(e) => return Err(io_err("cannot read the backup", path, e)),
    }
    Database::builder()
        .open_read_only(path)
        .map_err(|e| match StoreError::from(e) {
            StoreError::Corrupt(m) => not_backup(m),
            StoreError::Locked(_) => StoreError::Io(format!(
                "{} is open in another process (is it a running server's data file?)",
                path.display()
            )),
            other => other.at(path),
        })
}

fn read_info(txn: &ReadTransaction, path: &Path) -> Result<BackupInfo, StoreError> {
    let names: Vec<String> = txn.list_tables()?.map(|t| t.name().to_string()).collect();
    if !names.iter().any(|n| n == META.name()) {
        let what = if names.iter().any(|n| n == "meta_v1") {
            "it is a kith data file, not a backup; copy it back by hand, or make a backup of it \
             with `kith backup` while it is the data dir"
        } else {
            "no kith_backup_meta table"
        };
        return Err(StoreError::Io(format!(
            "{} is not a kith backup: {what}",
            path.display()
        )));
    }
    let meta = txn.open_table(META)?;
    let u64_of = |key: &str| -> Result<u64, StoreError> {
        match meta.get(key)? {
            Some(v) => decode_u64(v.value())
                .map_err(|e| StoreError::Corrupt(format!("backup meta {key}: {e}"))),
            None => Err(StoreError::Io(format!(
                "{}: the backup has no {key}; it is damaged or not kith's",
                path.display()
            ))),
        }
    };
    let format = u64_of("format")?;
    if format != BACKUP_FORMAT {
        return Err(StoreError::Io(format!(
            "{} is a backup in format {format}, this kith reads format {BACKUP_FORMAT}; \
             restore it with the kith version that made it",
            path.display()
        )));
    }
    let schema_version = u64_of("schema_version")?;
    if schema_version > SCHEMA_VERSION {
        return Err(StoreError::Io(format!(
            "{} was made by a newer kith (schema {schema_version}); this kith reads schema \
             {SCHEMA_VERSION} and older: restore it with a kith at least as new as the one that \
             made it",
            path.display()
        )));
    }
    let kith_version = match meta.get("kith_version")? {
        Some(v) => String::from_utf8_lossy(v.value()).into_owned(),
        None => String::new(),
    };
    let mut files = Vec::new();
    for row in txn.open_table(FILES)?.iter()? {
        let (k, _) = row?;
        let (rel, chunk) = k.value();
        if chunk == 0 {
            check_rel(rel)?;
            files.push(rel.to_string());
        }
    }
    Ok(BackupInfo {
        format,
        schema_version,
        kith_version,
        created_unix: u64_of("created_unix")?,
        tables: u64_of("tables")? as usize,
        files,
        skipped: Vec::new(),
    })
}

/// A stored path must stay inside the data directory: relative, no `..`.
fn check_rel(rel: &str) -> Result<(), StoreError> {
    let p = Path::new(rel);
    let ok = !rel.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(StoreError::Io(format!(
            "the backup holds a file with an unsafe path {rel:?}; refusing it"
        )))
    }
}

fn create_private(path: &Path) -> Result<File, StoreError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err("cannot create", path, e))
}

fn finish_file(f: File, path: &Path) -> Result<(), StoreError> {
    f.sync_all().map_err(|e| io_err("cannot sync", path, e))
}

fn temp_beside(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    dest.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Makes a rename durable (best effort: some filesystems refuse fsync on directories).
pub(crate) fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(d) = File::open(parent) {
            let _ = d.sync_all();
        }
    }
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}
