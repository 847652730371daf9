//! etcd's `Cluster.MemberList` and `Maintenance` (Status, Alarm) over kvset's Cluster service.
//! Membership is read-only through etcd's API: kvset's membership follows its StatefulSet, so
//! MemberAdd / MemberRemove / MemberPromote are not served (UNIMPLEMENTED).

use crate::auth::same_caller;
use kvset_proto::etcd::etcdserverpb as pb;
use kvset_proto::v1::{self, cluster_server::Cluster};
use tonic::{Request, Response, Status};

use super::{etcd_status, header, member_id};
use crate::api::cluster::ClusterService;

/// Serves `etcdserverpb.Cluster` and `etcdserverpb.Maintenance` through kvset's Cluster service.
#[derive(Clone)]
pub struct EtcdCluster {
    cluster: ClusterService,
    /// `http` or `https`, for the member URLs.
    scheme: &'static str,
}

impl EtcdCluster {
    pub fn new(cluster: ClusterService, tls: bool) -> Self {
        Self {
            cluster,
            scheme: if tls { "https" } else { "http" },
        }
    }

    async fn status(&self) -> Result<v1::StatusResponse, Status> {
        Ok(self
            .cluster
            .status(Request::new(v1::StatusRequest {}))
            .await
            .map_err(etcd_status)?
            .into_inner())
    }
}

/// The cluster id a kvset header carries.
fn cluster_of(h: &Option<v1::ResponseHeader>) -> String {
    h.as_ref().map(|h| h.cluster_id.clone()).unwrap_or_default()
}

/// etcd's alarm list for kvset's.
fn alarms_of(cluster: &str, alarms: &[v1::AlarmMember]) -> Vec<pb::AlarmMember> {
    alarms
        .iter()
        .map(|a| pb::AlarmMember {
            member_id: member_id(cluster, &a.member_name),
            alarm: if a.alarm == v1::AlarmType::Nospace as i32 {
                pb::AlarmType::Nospace as i32
            } else {
                pb::AlarmType::None as i32
            },
        })
        .collect()
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for EtcdCluster {
    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let resp = self
            .cluster
            .members(Request::new(v1::MembersRequest {}))
            .await
            .map_err(etcd_status)?
            .into_inner();
        let cluster = cluster_of(&resp.header);
        let members = resp
            .members
            .iter()
            .map(|m| pb::Member {
                id: member_id(&cluster, &m.name),
                name: m.name.clone(),
                peer_ur_ls: vec![format!("http://{}", m.peer_addr)],
                client_ur_ls: vec![format!("{}://{}", self.scheme, m.client_addr)],
                is_learner: !m.voter,
            })
            .collect();
        Ok(Response::new(pb::MemberListResponse {
            header: header(resp.header.as_ref()),
            members,
        }))
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for EtcdCluster {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        let r = request.get_ref();
        let status = self.status().await?;
        let cluster = cluster_of(&status.header);
        let action = match AlarmAction::try_from(r.action) {
            Ok(AlarmAction::Get) => v1::alarm_request::AlarmAction::Get,
            Ok(AlarmAction::Deactivate) => v1::alarm_request::AlarmAction::Deactivate,
            _ => {
                return Err(Status::invalid_argument(
                    "kvset raises alarms itself (the space quota); use GET or DEACTIVATE",
                ))
            }
        };
        // etcd names members by id; find the kvset member with that derived id.
        let member = status
            .members
            .iter()
            .filter_map(|m| m.member.as_ref())
            .find(|m| member_id(&cluster, &m.name) == r.member_id);
        let resp = self
            .cluster
            .alarm(same_caller(
                &request,
                Request::new(v1::AlarmRequest {
                    action: action as i32,
                    member_id: member.map_or(0, |m| m.id),
                    alarm: if r.alarm == pb::AlarmType::Nospace as i32 {
                        v1::AlarmType::Nospace as i32
                    } else {
                        v1::AlarmType::None as i32
                    },
                    all_members: r.member_id == 0,
                    ..Default::default()
                }),
            ))
            .await
            .map_err(etcd_status)?
            .into_inner();
        Ok(Response::new(pb::AlarmResponse {
            header: header(resp.header.as_ref()),
            alarms: alarms_of(&cluster, &resp.alarms),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let s = self.status().await?;
        let cluster = cluster_of(&s.header);
        let errors = s
            .alarms
            .iter()
            .map(|a| {
                format!(
                    "memberID:{} alarm:NOSPACE",
                    member_id(&cluster, &a.member_name)
                )
            })
            .collect();
        Ok(Response::new(pb::StatusResponse {
            header: header(s.header.as_ref()),
            // The etcd API level kvset speaks; kvset's own version is in kvset.v1 Status.
            version: "3.5.0".into(),
            db_size: s.store_usage_bytes as i64,
            leader: if s.leader_name.is_empty() {
                0
            } else {
                member_id(&cluster, &s.leader_name)
            },
            raft_index: s.commit_index,
            raft_term: s.term,
            raft_applied_index: s.applied_index,
            errors,
            db_size_in_use: s.store_usage_bytes as i64,
            is_learner: s.role == v1::Role::Learner as i32,
        }))
    }
}
