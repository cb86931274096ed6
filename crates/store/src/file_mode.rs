//! The SQLite files hold every user's personal data: they are made
//! owner-only (0600), and a database found readable by others is made so.
//! SQLite gives its `-wal` and `-shm` files the mode of the database file,
//! so making the database file first, owner-only, covers all three.

use std::path::{Path, PathBuf};

/// The database file a SQLite URL names (`sqlite://FILE?...`, `sqlite:FILE`),
/// or `None` for an in-memory database.
pub(crate) fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let (file, query) = rest.split_once('?').unwrap_or((rest, ""));
    if file.is_empty() || file.contains(":memory:") || query.split('&').any(|p| p == "mode=memory") {
        return None;
    }
    Some(PathBuf::from(file))
}

/// Makes the database file (if new) and its `-wal`/`-shm` companions
/// owner-only; logs when it tightened an existing one.
#[cfg(unix)]
pub(crate) fn owner_only(file: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for path in [file.to_owned(), companion(file, "-wal"), companion(file, "-shm")] {
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o700))?;
            tracing::warn!(
                file = %path.display(),
                was = format!("{:o}", mode & 0o777),
                "the database file was readable by others: made owner-only"
            );
        }
    }
    Ok(())
}

#[cfg(not(unix))]
pub(crate) fn owner_only(_file: &Path) -> std::io::Result<()> {
    Ok(())
}

fn companion(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_of_urls() {
        assert_eq!(
            sqlite_file("sqlite://userdir.db?mode=rwc"),
            Some(PathBuf::from("userdir.db"))
        );
        assert_eq!(
            sqlite_file("sqlite:/var/lib/u.db"),
            Some(PathBuf::from("/var/lib/u.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://x.db?mode=memory&cache=shared"), None);
        assert_eq!(sqlite_file("postgres://u@h/db"), None);
    }
}
