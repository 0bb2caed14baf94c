//! The api crate's one error type. Every message names the parameter, the
//! value given and what is allowed, in an operator's words; `kind()` tells
//! the binaries which CSI status code it maps to.

/// What class of failure an error is, for mapping to a gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request or StorageClass is wrong (InvalidArgument).
    InvalidArgument,
    /// A size is outside what can be built (OutOfRange).
    OutOfRange,
    /// Bytes or text read back from the kernel or a disk do not parse (Internal).
    Corrupt,
}

/// A rule of the dm-raid model was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A parameter has a value that is not allowed.
    #[error("{param} {value:?} is not allowed: {allowed}")]
    Invalid {
        /// The parameter (StorageClass key or table word).
        param: &'static str,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
    /// A StorageClass key that dmraid-csi does not know.
    #[error("unknown StorageClass parameter {key:?}; allowed: {allowed}")]
    UnknownKey {
        /// The key.
        key: String,
        /// The keys that are allowed.
        allowed: String,
    },
    /// A required parameter is missing.
    #[error("StorageClass parameter {0} is required")]
    Missing(&'static str),
    /// A size cannot be built.
    #[error("{what}: {detail}")]
    Size {
        /// Which size.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// Text or bytes from the kernel or a disk that do not parse.
    #[error("cannot parse {what}: {detail}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// Why it failed, with the offending input.
        detail: String,
    },
}

impl Error {
    /// The class of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. } | Error::UnknownKey { .. } | Error::Missing(_) => {
                ErrorKind::InvalidArgument
            }
            Error::Size { .. } => ErrorKind::OutOfRange,
            Error::Parse { .. } => ErrorKind::Corrupt,
        }
    }

    pub(crate) fn invalid(
        param: &'static str,
        value: impl ToString,
        allowed: impl Into<String>,
    ) -> Self {
        Error::Invalid {
            param,
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }

    pub(crate) fn parse(what: &'static str, detail: impl Into<String>) -> Self {
        Error::Parse {
            what,
            detail: detail.into(),
        }
    }
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;
