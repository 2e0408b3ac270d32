//! The one place module errors become HTTP status codes.

use http::StatusCode;

use crate::catalog::CatalogError;
use crate::delivery::index::IndexError;
use crate::delivery::path::PathError;
use crate::delivery::resolve::ResolveError;
use crate::delivery::DeliveryError;
use crate::fetch::FetchError;
use crate::fleet::FleetError;
use crate::http::route::RouteError;
use crate::http::RequestError;
use crate::policy::Refusal;
use crate::store::StoreError;
use crate::upkeep::cleanup::CleanupError;
use crate::upkeep::scrub::ScrubError;
use crate::wsus::client::outbox::OutboxError;
use crate::wsus::client::self_update::SelfUpdateError;
use crate::wsus::client::ClientError;
use crate::wsus::sync::SyncError;

/// An error that knows which status code a client should see for it.
pub trait HttpStatus {
    fn status(&self) -> StatusCode;
}

impl HttpStatus for RouteError {
    fn status(&self) -> StatusCode {
        match self {
            RouteError::NoRoute => StatusCode::NOT_FOUND,
            RouteError::Malformed(_) => StatusCode::BAD_REQUEST,
            RouteError::TooLong => StatusCode::URI_TOO_LONG,
        }
    }
}

impl HttpStatus for RequestError {
    fn status(&self) -> StatusCode {
        match self {
            RequestError::Host => StatusCode::BAD_REQUEST,
            RequestError::Method => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl HttpStatus for Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::Declined | Refusal::NotApproved => StatusCode::FORBIDDEN,
        }
    }
}

impl HttpStatus for FetchError {
    fn status(&self) -> StatusCode {
        match self {
            FetchError::Timeout(_) | FetchError::Stalled(_) => StatusCode::GATEWAY_TIMEOUT,
            FetchError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            FetchError::NotInCatalog => StatusCode::NOT_FOUND,
            FetchError::DiskFull
            | FetchError::LargerThanStore { .. }
            | FetchError::LargerThanLimit { .. } => StatusCode::INSUFFICIENT_STORAGE,
            FetchError::Store(_) | FetchError::Setup(_) => StatusCode::INTERNAL_SERVER_ERROR,
            FetchError::UpstreamStatus { .. }
            | FetchError::Connect(_)
            | FetchError::Transfer(_)
            | FetchError::Verification(_)
            | FetchError::Changed(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl HttpStatus for DeliveryError {
    /// Refused origins are 4xx on purpose: DO then stops asking this cache
    /// host for that origin for a while, and the same request would be
    /// refused again. Everything upstream (a name that does not resolve,
    /// an origin's 403/404/5xx, a timeout) is 502/504, after which DO falls
    /// back for that request only and keeps using upcache.
    fn status(&self) -> StatusCode {
        match self {
            DeliveryError::Off => StatusCode::NOT_FOUND,
            DeliveryError::Path(PathError::NotDelivery) => StatusCode::NOT_FOUND,
            DeliveryError::Path(PathError::Malformed(_)) => StatusCode::BAD_REQUEST,
            DeliveryError::Path(PathError::TooLong) => StatusCode::URI_TOO_LONG,
            DeliveryError::Origin(e) | DeliveryError::Resolve(ResolveError::Refused(e)) => {
                if e.is_malformed() {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::FORBIDDEN
                }
            }
            DeliveryError::Resolve(ResolveError::Failed(..)) => StatusCode::BAD_GATEWAY,
            DeliveryError::Resolve(ResolveError::Timeout(_)) => StatusCode::GATEWAY_TIMEOUT,
            DeliveryError::Fetch(e) => e.status(),
            DeliveryError::Store(_) | DeliveryError::Index(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl HttpStatus for IndexError {
    fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

impl HttpStatus for CatalogError {
    fn status(&self) -> StatusCode {
        match self {
            CatalogError::Invalid { .. } => StatusCode::BAD_REQUEST,
            CatalogError::UnknownUpdate(_) | CatalogError::UnknownGroup(_) => StatusCode::NOT_FOUND,
            CatalogError::GroupExists(_) | CatalogError::BuiltinGroup(_) => StatusCode::CONFLICT,
            CatalogError::Db(_) | CatalogError::Export(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl HttpStatus for FleetError {
    fn status(&self) -> StatusCode {
        match self {
            FleetError::UnknownComputer(_) | FleetError::UnknownGroup(_) => StatusCode::NOT_FOUND,
            FleetError::Invalid(_) => StatusCode::BAD_REQUEST,
            FleetError::ClientTargeting => StatusCode::CONFLICT,
            FleetError::Db(_) | FleetError::Thread(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl HttpStatus for CleanupError {
    fn status(&self) -> StatusCode {
        match self {
            CleanupError::Running | CleanupError::Follower => StatusCode::CONFLICT,
            CleanupError::NoSharedTier => StatusCode::BAD_REQUEST,
            CleanupError::Shared(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl HttpStatus for ScrubError {
    fn status(&self) -> StatusCode {
        match self {
            ScrubError::Running => StatusCode::CONFLICT,
            ScrubError::BelowLeastRate(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl HttpStatus for SyncError {
    fn status(&self) -> StatusCode {
        match self {
            SyncError::Running => StatusCode::CONFLICT,
            SyncError::Selection(_) => StatusCode::BAD_REQUEST,
            SyncError::Transport(_) | SyncError::Fault(_) | SyncError::Soap(_) => {
                StatusCode::BAD_GATEWAY
            }
            SyncError::Setup(_) | SyncError::Meta(_) | SyncError::Project(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl HttpStatus for SelfUpdateError {
    fn status(&self) -> StatusCode {
        match self {
            SelfUpdateError::NotFound => StatusCode::NOT_FOUND,
            SelfUpdateError::Method => StatusCode::METHOD_NOT_ALLOWED,
            SelfUpdateError::BadPath => StatusCode::BAD_REQUEST,
            SelfUpdateError::TooLarge | SelfUpdateError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl HttpStatus for crate::metadata::MetaError {
    fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

impl HttpStatus for StoreError {
    fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

impl HttpStatus for OutboxError {
    fn status(&self) -> StatusCode {
        match self {
            OutboxError::OutOfOrder { .. } => StatusCode::BAD_REQUEST,
            OutboxError::Db(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A follower's reports applied on a primary (Windows clients themselves
/// get SOAP faults, `wsus::soap`).
impl HttpStatus for ClientError {
    fn status(&self) -> StatusCode {
        match self {
            ClientError::Outbox(e) => e.status(),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_errors_distinguish_timeouts_and_full_disks() {
        assert_eq!(
            FetchError::Timeout("x".into()).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            FetchError::DiskFull.status(),
            StatusCode::INSUFFICIENT_STORAGE
        );
        let s = FetchError::UpstreamStatus {
            status: 404,
            url: "u".into(),
        }
        .status();
        assert_eq!(s, StatusCode::BAD_GATEWAY);
        assert_eq!(
            FetchError::Verification("x".into()).status(),
            StatusCode::BAD_GATEWAY
        );
    }
}
