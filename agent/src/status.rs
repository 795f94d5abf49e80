//! `nodeagent status`: placeholder replaced below.
