//! Secrets the server makes for itself and keeps in the data directory (the TURN shared
//! secret, the dialback secret): generated once from the system RNG, written with mode 0600
//! through a temporary file and a rename (never half a secret), and read back on every start so
//! keys made before a restart stay valid.

use std::io;
use std::path::Path;

/// The trimmed content of `DATA/name`, or a new secret (32 random bytes as `encode` writes
/// them) stored there first.
pub fn load_or_create(
    data_dir: &Path,
    name: &str,
    encode: impl FnOnce(&[u8; 32]) -> String,
) -> io::Result<String> {
    use ring::rand::SecureRandom as _;
    let path = data_dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut raw = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut raw)
        .map_err(|_| io::Error::other("the system random number generator failed"))?;
    let secret = encode(&raw);
    std::fs::create_dir_all(data_dir)?;
    let tmp = data_dir.join(format!("{name}.tmp"));
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        io::Write::write_all(&mut f, format!("{secret}\n").as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_then_read_back_with_private_mode() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("kith-secret-{}", fastrand::u64(..)));
        let first = load_or_create(&dir, "x.secret", |b| format!("{}", b.len())).unwrap();
        assert_eq!(first, "32");
        let again = load_or_create(&dir, "x.secret", |_| "other".into()).unwrap();
        assert_eq!(again, "32");
        let mode = std::fs::metadata(dir.join("x.secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
