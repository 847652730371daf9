//! The `kvset.v1.Auth` service: a caller asks who the member takes it for, and what it may do
//! with a key. Open to every caller; it tells about the caller only (see [`crate::auth`]).

use std::sync::Arc;

use kvset_proto::v1::auth_server::Auth;
use kvset_proto::v1::{AuthCheckRequest, AuthCheckResponse, WhoAmIRequest, WhoAmIResponse};
use tonic::{Request, Response, Status};

use super::authz::range_of;
use crate::auth::{Caller, Grants, Identity};
use crate::node::Node;

/// Serves `kvset.v1.Auth` on one member.
#[derive(Clone)]
pub struct AuthService {
    node: Arc<Node>,
}

impl AuthService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The caller's identity; a request that reached no identity check has none.
    fn identity<T>(request: &Request<T>) -> Result<Identity, Status> {
        match request.extensions().get::<Caller>() {
            Some(Caller::Client(id)) | Some(Caller::Forwarded(id)) => Ok(id.clone()),
            _ => Err(Status::failed_precondition(
                "Auth answers clients on the client port only",
            )),
        }
    }

    fn header(&self) -> Option<kvset_proto::v1::ResponseHeader> {
        let revision = self.node.state_machine().revision();
        Some(self.node.header(revision))
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn who_am_i(
        &self,
        request: Request<WhoAmIRequest>,
    ) -> Result<Response<WhoAmIResponse>, Status> {
        let identity = Self::identity(&request)?;
        let authorizer = self.node.authorizer();
        Ok(Response::new(WhoAmIResponse {
            header: self.header(),
            roles: authorizer.grants(&identity).roles,
            identity: identity.to_string(),
            authorization: authorizer.describe(),
        }))
    }

    async fn check(
        &self,
        request: Request<AuthCheckRequest>,
    ) -> Result<Response<AuthCheckResponse>, Status> {
        let identity = Self::identity(&request)?;
        let req = request.get_ref();
        let range = range_of(&req.key, &req.range_end, req.prefix);
        let grants = self.node.authorizer().grants(&identity);
        Ok(Response::new(AuthCheckResponse {
            header: self.header(),
            identity: identity.to_string(),
            read: Grants::covers(&grants.read, &range),
            write: Grants::covers(&grants.write, &range),
            admin: grants.admin,
        }))
    }
}
