//! The listener watch's tracepoint (`sock/inet_sock_set_state`): does this
//! kernel's record keep `oldstate` and `protocol` where the program
//! (`lbd_listen_close`) reads them? The program reads at constant offsets
//! (a helper call per event to read at offsets given at load time would
//! cost more than the rest of it), so the loader checks them against this
//! kernel's format file and attaches nothing if they differ: the record's
//! layout is the kernel's to change.
use std::path::{Path, PathBuf};

use dataplane_common::{LISTEN_RECORD_OLDSTATE, LISTEN_RECORD_PROTOCOL};

pub const CATEGORY: &str = "sock";
pub const EVENT: &str = "inet_sock_set_state";
pub const PROGRAM: &str = "lbd_listen_close";

/// Where tracefs is mounted, newest convention first.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// Byte offsets of the fields the program reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordOffsets {
    /// `int oldstate`.
    pub oldstate: u32,
    /// `__u16 protocol`.
    pub protocol: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("no tracefs with {CATEGORY}/{EVENT} under {TRACEFS:?}")]
    NoTracefs,
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no field `{field}` of {size} bytes")]
    Field {
        path: PathBuf,
        field: &'static str,
        size: u32,
    },
    #[error(
        "this kernel's record has oldstate at {}, protocol at {}; lbd_listen_close reads them at \
         {LISTEN_RECORD_OLDSTATE} and {LISTEN_RECORD_PROTOCOL}",
        found.oldstate,
        found.protocol
    )]
    Moved { found: RecordOffsets },
}

/// Ok if this kernel's record holds the fields where the program reads them.
pub fn check_record() -> Result<(), FormatError> {
    let found = record_offsets()?;
    let compiled = RecordOffsets {
        oldstate: LISTEN_RECORD_OLDSTATE as u32,
        protocol: LISTEN_RECORD_PROTOCOL as u32,
    };
    if found != compiled {
        return Err(FormatError::Moved { found });
    }
    Ok(())
}

/// The offsets in this kernel's format file.
pub fn record_offsets() -> Result<RecordOffsets, FormatError> {
    let path = TRACEFS
        .iter()
        .map(|t| {
            Path::new(t)
                .join("events")
                .join(CATEGORY)
                .join(EVENT)
                .join("format")
        })
        .find(|p| p.exists())
        .ok_or(FormatError::NoTracefs)?;
    let text = std::fs::read_to_string(&path).map_err(|source| FormatError::Read {
        path: path.clone(),
        source,
    })?;
    let field = |field: &'static str, size: u32| {
        field_offset(&text, field, size).ok_or_else(|| FormatError::Field {
            path: path.clone(),
            field,
            size,
        })
    };
    Ok(RecordOffsets {
        oldstate: field("oldstate", 4)?,
        protocol: field("protocol", 2)?,
    })
}

/// The offset of `name` in a format file's text, if it is there with
/// `size` bytes. Lines look like
/// `field:int oldstate;<TAB>offset:16;<TAB>size:4;<TAB>signed:1;`.
fn field_offset(format: &str, name: &str, size: u32) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        if decl.rsplit([' ', '*']).next()? != name {
            return None;
        }
        let mut value =
            |key: &str| -> Option<u32> { parts.next()?.strip_prefix(key)?.parse().ok() };
        let offset = value("offset:")?;
        (value("size:")? == size).then_some(offset)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT: &str = "name: inet_sock_set_state\nID: 2287\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;\n\
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;\n";

    #[test]
    fn finds_fields_by_name_and_size() {
        assert_eq!(field_offset(FORMAT, "oldstate", 4), Some(16));
        assert_eq!(field_offset(FORMAT, "protocol", 2), Some(30));
        assert_eq!(field_offset(FORMAT, "skaddr", 8), Some(8));
        // A size that changed is refused, not misread.
        assert_eq!(field_offset(FORMAT, "protocol", 4), None);
        assert_eq!(field_offset(FORMAT, "state", 4), None);
    }

    #[test]
    fn this_kernel_keeps_the_fields_where_the_program_reads() {
        check_record().expect("format file of sock/inet_sock_set_state");
    }
}
