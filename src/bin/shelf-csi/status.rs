//! shelf's error codes as gRPC status codes (CSI spec, "Error Scheme"): the one place a
//! shelfd answer becomes a `tonic::Status`, so every RPC maps the same code the same way.

use shelf::client::ClientError;
use shelf::proto::ErrorCode;
use tonic::{Code, Status};

/// The gRPC code for a shelf wire code. `no_space` is RESOURCE_EXHAUSTED (CreateVolume:
/// "unable to provision"), `busy` ABORTED (an operation on the object is pending or it is
/// attached elsewhere), `has_dependents` FAILED_PRECONDITION (a volume with snapshots).
pub fn code_for(code: ErrorCode) -> Code {
    match code {
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::HasDependents => Code::FailedPrecondition,
        ErrorCode::NoSpace => Code::ResourceExhausted,
        ErrorCode::Busy => Code::Aborted,
        ErrorCode::Unsupported => Code::InvalidArgument,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::Internal => Code::Internal,
        ErrorCode::Tampered => Code::DataLoss,
    }
}

/// A client error as a status, prefixed with the appliance it came from. An appliance that
/// cannot be reached is UNAVAILABLE (the sidecars retry); a reply that breaks the protocol
/// is INTERNAL.
pub fn from_client(appliance: &str, e: ClientError) -> Status {
    match &e {
        ClientError::Remote(r) => {
            let code = ErrorCode::parse(&r.code).map_or(Code::Unknown, code_for);
            Status::new(
                code,
                format!("appliance {appliance}: {}: {}", r.code, r.message),
            )
        }
        ClientError::Connect { .. } => Status::unavailable(format!("appliance {appliance}: {e}")),
        ClientError::Frame(_) => Status::unavailable(format!("appliance {appliance}: {e}")),
        ClientError::Protocol(_) => Status::internal(format!("appliance {appliance}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shelf::client::RemoteError;

    #[test]
    fn every_shelf_code_maps_to_the_csi_code() {
        let want = [
            ("not_found", Code::NotFound),
            ("already_exists", Code::AlreadyExists),
            ("invalid_argument", Code::InvalidArgument),
            ("has_dependents", Code::FailedPrecondition),
            ("no_space", Code::ResourceExhausted),
            ("busy", Code::Aborted),
            ("unsupported", Code::InvalidArgument),
            ("permission_denied", Code::PermissionDenied),
            ("internal", Code::Internal),
            ("tampered", Code::DataLoss),
            ("from_the_future", Code::Unknown),
        ];
        for (wire, code) in want {
            let e = ClientError::Remote(RemoteError {
                code: wire.into(),
                message: "m".into(),
            });
            let s = from_client("a1", e);
            assert_eq!(s.code(), code, "{wire}");
            assert!(s.message().starts_with("appliance a1: "), "{}", s.message());
        }
    }
}
