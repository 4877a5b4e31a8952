//! Kubernetes: the watch-based source. The object types it watches are serin-mesh-api's
//! (`serin_mesh_api::objects`), shared with the canary controller that writes them.

pub mod source;
