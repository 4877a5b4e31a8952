//! The traffic-split control plane.
