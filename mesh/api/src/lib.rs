//! Route-table types shared by the proxy and the control plane.
