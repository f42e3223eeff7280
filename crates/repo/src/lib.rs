//! lifeboat-repo (placeholder).
