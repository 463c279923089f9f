//! Paths from the network, confined to the document root: percent-decoded
//! once, no `..`, no NUL, no symlink that leads out of the root.

use std::path::{Component, Path, PathBuf};

/// Longest request path accepted (Linux's PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("path is not absolute")]
    NotAbsolute,
    #[error("path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    #[error("path is not valid UTF-8 once decoded")]
    NotUtf8,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path contains \"..\"")]
    DotDot,
    #[error("path names the root itself")]
    Root,
    #[error("path leaves the document root")]
    Escapes,
    #[error("parent directory does not exist")]
    NoParent,
}

/// Maps the path of a request URI (still percent-encoded, no query) to a
/// file under `root`. The parent directory must exist and, with symlinks
/// resolved, lie under the root; a target that is a symlink must resolve
/// under the root too.
pub fn confine(root: &Path, uri_path: &str) -> Result<PathBuf, PathError> {
    if uri_path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if !uri_path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = percent_encoding::percent_decode_str(uri_path)
        .decode_utf8()
        .map_err(|_| PathError::NotUtf8)?;
    if decoded.contains('\0') {
        return Err(PathError::Nul);
    }
    let rel = Path::new(decoded.trim_start_matches('/'));
    let mut clean = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => clean.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(PathError::DotDot),
            Component::RootDir | Component::Prefix(_) => return Err(PathError::NotAbsolute),
        }
    }
    let name = clean.file_name().ok_or(PathError::Root)?.to_owned();
    let root = root.canonicalize().map_err(|_| PathError::NoParent)?;
    let parent = root
        .join(clean.parent().unwrap_or(Path::new("")))
        .canonicalize()
        .map_err(|_| PathError::NoParent)?;
    if !parent.starts_with(&root) {
        return Err(PathError::Escapes);
    }
    let target = parent.join(name);
    if let Ok(meta) = std::fs::symlink_metadata(&target)
        && meta.file_type().is_symlink()
    {
        match target.canonicalize() {
            Ok(real) if real.starts_with(&root) => {}
            _ => return Err(PathError::Escapes),
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        let dir = std::env::temp_dir().join(format!("sf-paths-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::os::unix::fs::symlink(dir.join("outside"), root.join("out")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("pw")).unwrap();
        let root_c = root.canonicalize().unwrap();
        assert_eq!(confine(&root, "/sub/f").unwrap(), root_c.join("sub/f"));
        assert_eq!(
            confine(&root, "/sub/a%20b").unwrap(),
            root_c.join("sub/a b")
        );
        for (p, e) in [
            ("/../x", PathError::DotDot),
            ("/sub/%2e%2e/%2e%2e/x", PathError::DotDot),
            ("/out/x", PathError::Escapes),
            ("/pw", PathError::Escapes),
            ("/a%00b", PathError::Nul),
            ("/%ff", PathError::NotUtf8),
            ("x", PathError::NotAbsolute),
            ("/", PathError::Root),
            ("/nodir/x", PathError::NoParent),
        ] {
            assert_eq!(confine(&root, p), Err(e), "{p}");
        }
        assert_eq!(
            confine(&root, &format!("/{}", "a".repeat(MAX_PATH_LEN))),
            Err(PathError::TooLong)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
