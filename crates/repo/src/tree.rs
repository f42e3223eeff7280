//! Walking snapshot trees.
//!
//! Lives here: [`walk`] (depth-first visit of every node with its path), [`find_path`] (the
//! node at a path inside a snapshot), and [`save_tree`]. Never here: file-system access.

use lifeboat_types::BlobId;

use crate::error::{Error, Result};
use crate::format::{to_cbor, BlobKind, Node, NodeKind, Tree};
use crate::index::Index;
use crate::repository::Repository;
use crate::writer::BlobWriter;

/// Stores a tree blob (deduplicated like any blob) and returns its id.
///
/// # Errors
/// When the writer pipeline failed.
pub fn save_tree(repo: &Repository, writer: &BlobWriter, tree: &Tree) -> Result<BlobId> {
    let bytes = to_cbor(tree);
    let id = repo.key().blob_id(&bytes);
    if writer.claim(&id) {
        writer.save(BlobKind::Tree, id, bytes)?;
    }
    Ok(id)
}

/// Visits every node below `root` depth-first, in name order, with its path relative to
/// the root (components as raw bytes joined by `/`). `visit` returns whether to descend
/// into a directory.
///
/// # Errors
/// The first error reading a tree or returned by `visit`.
pub fn walk(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<bool>,
) -> Result<()> {
    let mut path = Vec::new();
    walk_inner(repo, index, root, &mut path, visit, 0)
}

fn walk_inner(
    repo: &Repository,
    index: &Index,
    id: &BlobId,
    path: &mut Vec<u8>,
    visit: &mut dyn FnMut(&[u8], &Node) -> Result<bool>,
    depth: usize,
) -> Result<()> {
    if depth > 512 {
        return Err(Error::damaged(
            format!("tree {}", id.short()),
            "directory nesting deeper than 512 levels",
        ));
    }
    let tree = repo.read_tree(index, id)?;
    for node in &tree.nodes {
        let len = path.len();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(&node.name);
        let descend = visit(path, node)?;
        if descend {
            if let (NodeKind::Dir, Some(sub)) = (&node.kind, &node.subtree) {
                walk_inner(repo, index, sub, path, visit, depth + 1)?;
            }
        }
        path.truncate(len);
    }
    Ok(())
}

/// Finds the node at `path` (components separated by `/`, leading `/` ignored) below the
/// tree `root`. An empty path means the root itself (returned as `None`).
///
/// # Errors
/// [`Error::PathNotFound`] when a component is missing.
pub fn find_path(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    path: &[u8],
    snapshot: &str,
) -> Result<Option<Node>> {
    let mut current = *root;
    let mut found: Option<Node> = None;
    for comp in path.split(|b| *b == b'/').filter(|c| !c.is_empty()) {
        if let Some(n) = &found {
            current = match (&n.kind, n.subtree) {
                (NodeKind::Dir, Some(s)) => s,
                _ => {
                    return Err(Error::PathNotFound {
                        path: String::from_utf8_lossy(path).into_owned(),
                        snapshot: snapshot.into(),
                    })
                }
            };
        }
        let tree = repo.read_tree(index, &current)?;
        found = Some(
            tree.nodes
                .into_iter()
                .find(|n| n.name == comp)
                .ok_or_else(|| Error::PathNotFound {
                    path: String::from_utf8_lossy(path).into_owned(),
                    snapshot: snapshot.into(),
                })?,
        );
    }
    Ok(found)
}
