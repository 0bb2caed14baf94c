//! The controller's errors and the one place they become CSI status codes.

use tonic::Status;

/// Everything that can go wrong in the cluster controller.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server could not be reached or answered with a server error.
    #[error("the Kubernetes API server is unavailable ({0}); the call can be retried")]
    Unavailable(String),
    /// The API server refused a request for another reason.
    #[error("the Kubernetes API server refused {what}: {message}")]
    Refused {
        /// What was asked.
        what: String,
        /// The server's message.
        message: String,
    },
    /// No volume with this id.
    #[error("volume {0} does not exist")]
    NotFound(String),
    /// An id no volume can have (not an object name), so no volume has it.
    #[error("{0}, so no such volume exists")]
    NoSuchId(crate::volume_id::BadId),
    /// A volume with this name exists with other parameters.
    #[error("volume {id} already exists with different parameters: {why}")]
    AlreadyExists {
        /// Volume id.
        id: String,
        /// What differs.
        why: String,
    },
    /// Another call on the same volume is running.
    #[error("an operation on volume {0} is already in progress; retry when it ends")]
    InFlight(String),
    /// No node has room, or the chosen node has none.
    #[error("{0}")]
    NoRoom(String),
    /// The node did not finish in time.
    #[error("{0}")]
    Timeout(String),
    /// The node reported a failure.
    #[error("node {node}: {message}")]
    NodeFailed {
        /// Node name.
        node: String,
        /// Why (a CamelCase reason).
        reason: String,
        /// The node's words.
        message: String,
    },
    /// Something in the request is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The capacity range cannot be met (the smallest volume is above the limit).
    #[error("{0}")]
    OutOfRange(String),
}

impl Error {
    /// Map a kube client error, naming what was being done.
    pub fn kube(what: &str, e: kube::Error) -> Error {
        match e {
            kube::Error::Api(s) if s.code == 404 => Error::NotFound(what.to_string()),
            kube::Error::Api(s) if s.code >= 500 || s.code == 429 => {
                Error::Unavailable(format!("{what}: {}", s.message))
            }
            kube::Error::Api(s) => Error::Refused {
                what: what.to_string(),
                message: s.message,
            },
            other => Error::Unavailable(format!("{what}: {other}")),
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let msg = e.to_string();
        match e {
            Error::Unavailable(_) => Status::unavailable(msg),
            Error::Refused { .. } => Status::internal(msg),
            Error::NotFound(_) | Error::NoSuchId(_) => Status::not_found(msg),
            Error::AlreadyExists { .. } => Status::already_exists(msg),
            Error::InFlight(_) => Status::aborted(msg),
            Error::NoRoom(_) => Status::resource_exhausted(msg),
            Error::Timeout(_) => Status::deadline_exceeded(msg),
            Error::Invalid(_) => Status::invalid_argument(msg),
            Error::OutOfRange(_) => Status::out_of_range(msg),
            Error::NodeFailed { ref reason, .. } => {
                use dmraid_api::reasons::CsiCode;
                let code = dmraid_api::FailureReason::parse(reason)
                    .map_or(CsiCode::Internal, |r| r.csi_code());
                match code {
                    CsiCode::ResourceExhausted => Status::resource_exhausted(msg),
                    CsiCode::InvalidArgument => Status::invalid_argument(msg),
                    CsiCode::AlreadyExists => Status::already_exists(msg),
                    CsiCode::OutOfRange => Status::out_of_range(msg),
                    CsiCode::Aborted => Status::aborted(msg),
                    CsiCode::FailedPrecondition => Status::failed_precondition(msg),
                    CsiCode::Internal => Status::internal(msg),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_csi_spec() {
        let code = |e: Error| Status::from(e).code();
        assert_eq!(code(Error::InFlight("v".into())), tonic::Code::Aborted);
        assert_eq!(
            code(Error::NoRoom("x".into())),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(
            code(Error::Unavailable("x".into())),
            tonic::Code::Unavailable
        );
        let failed = |reason: &str| Error::NodeFailed {
            node: "n".into(),
            reason: reason.into(),
            message: "m".into(),
        };
        assert_eq!(code(Error::OutOfRange("x".into())), tonic::Code::OutOfRange);
        let bad = crate::volume_id::VolumeId::parse("x/status").unwrap_err();
        assert_eq!(code(Error::NoSuchId(bad)), tonic::Code::NotFound);
        assert_eq!(code(failed("NoRoom")), tonic::Code::ResourceExhausted);
        assert_eq!(
            code(failed("DisksMissing")),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(code(failed("SpecChanged")), tonic::Code::AlreadyExists);
        assert_eq!(code(failed("Whatever")), tonic::Code::Internal);
        let api =
            |c: u16| kube::Error::Api(kube::core::Status::failure("m", "r").with_code(c).boxed());
        assert!(matches!(Error::kube("get", api(404)), Error::NotFound(_)));
        assert!(matches!(
            Error::kube("get", api(503)),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            Error::kube("get", api(422)),
            Error::Refused { .. }
        ));
    }
}
