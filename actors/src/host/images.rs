//! What one host must do about images, a pure reading of the state: abandon imports that a
//! former leader began (their stream died with it), delete the volumes of images being
//! deleted, and delete its copies of images (`Image::copies`) that are being deleted or
//! whose copy a former leader began. An image's own volume goes last, after every copy
//! (forgotten before them, a copy would never be deleted). Each image has one host that
//! looks after its own volume ([`caretaker`]): the one that received
//! it, or — for a shared pool, when that host is not up or gone — the first up host with
//! the pool active, so that a dead host never leaves an image stuck. The host actor
//! carries it out (`DeleteImage`, DeleteVolume, `ImageRemoved`).

use drover_raft::model::{ClusterState, HostHealth, Image, ImageCopy, ImageState, PoolOnHost};

/// What to do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImagePlan {
    /// `(image, volume)` of imports begun in an earlier term: to be marked deleting.
    pub abandon: Vec<(String, String)>,
    /// `(image, pool, volume)` to delete on the host, then forget.
    pub delete: Vec<(String, String, String)>,
    /// `(image, pool, volume)` of this host's copies to delete, then forget.
    pub delete_copies: Vec<(String, String, String)>,
}

/// `term`: the leader's own. An import of this term may still be streaming through this
/// leader; one of an earlier term cannot be.
pub fn plan(host: &str, state: &ClusterState, term: u64) -> ImagePlan {
    let mut out = ImagePlan::default();
    for image in state
        .images
        .values()
        .filter(|i| caretaker(state, i) == Some(host))
    {
        match image.state {
            ImageState::Importing { term: began } if began < term => {
                out.abandon.push((image.name.clone(), image.volume.clone()))
            }
            ImageState::Deleting if image.copies.is_empty() => {
                out.delete
                    .push((image.name.clone(), image.pool.clone(), image.volume.clone()))
            }
            ImageState::Deleting => {}
            ImageState::Importing { .. } | ImageState::Ready { .. } => {}
        }
    }
    for image in state.images.values() {
        let doomed = match image.copies.get(host) {
            Some(ImageCopy::Ready) => image.state == ImageState::Deleting,
            // This leader's copy may still be streaming; a former one's cannot be.
            Some(ImageCopy::Copying { term: began }) => *began < term,
            None => false,
        };
        if doomed {
            out.delete_copies
                .push((image.name.clone(), image.pool.clone(), image.volume.clone()));
        }
    }
    out
}

/// The host that looks after `image` now, if any can.
pub fn caretaker<'a>(state: &'a ClusterState, image: &'a Image) -> Option<&'a str> {
    let up = |h: &str| {
        state
            .hosts
            .get(h)
            .is_some_and(|h| h.health == HostHealth::Up)
    };
    if up(&image.host) {
        return Some(&image.host);
    }
    let pool = state.pools.get(&image.pool)?;
    if !pool.spec.shared {
        // Only its host has it: wait for that host.
        return state
            .hosts
            .contains_key(&image.host)
            .then_some(image.host.as_str());
    }
    state
        .hosts
        .keys()
        .map(String::as_str)
        .find(|h| up(h) && matches!(pool.on_hosts.get(*h), Some(PoolOnHost::Active { .. })))
}

#[cfg(test)]
mod tests {
    use drover_raft::model::{Host, ImageFormat};

    use super::*;

    fn image(name: &str, host: &str, pool: &str, state: ImageState) -> (String, Image) {
        let i = Image {
            name: name.into(),
            pool: pool.into(),
            volume: format!("image-{name}-1"),
            host: host.into(),
            state,
            copies: Default::default(),
        };
        (name.into(), i)
    }

    /// h1 and h2, up; pools "p" (shared) and "l" (not), active on both.
    fn state(images: Vec<(String, Image)>) -> ClusterState {
        let mut s = ClusterState::default();
        for h in ["h1", "h2"] {
            let mut host = Host::new(h, "127.0.0.1:1");
            host.health = HostHealth::Up;
            s.hosts.insert(h.into(), host);
        }
        for (name, shared) in [("p", true), ("l", false)] {
            s.pools.insert(
                name.into(),
                crate::fixtures::pool(name, shared, &["h1", "h2"]),
            );
        }
        s.images = images.into_iter().collect();
        s
    }

    fn names(list: &[(String, String, String)]) -> Vec<&str> {
        list.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    #[test]
    fn old_imports_are_abandoned_and_deleting_images_deleted_by_their_host() {
        let ready = ImageState::Ready {
            format: ImageFormat::Raw,
            virtual_bytes: 1,
            file_bytes: 1,
            sha256: String::new(),
        };
        let s = state(vec![
            image("old", "h1", "p", ImageState::Importing { term: 4 }),
            image("now", "h1", "p", ImageState::Importing { term: 5 }),
            image("gone", "h1", "p", ImageState::Deleting),
            image("kept", "h1", "p", ready),
            image("theirs", "h2", "p", ImageState::Deleting),
        ]);
        let p = plan("h1", &s, 5);
        assert_eq!(p.abandon, [("old".to_string(), "image-old-1".to_string())]);
        assert_eq!(names(&p.delete), ["gone"]);
    }

    /// Its host dead, an image in a shared pool is looked after by another host with the
    /// pool; one in an unshared pool waits for its own host.
    #[test]
    fn a_dead_hosts_shared_images_are_taken_over() {
        let mut s = state(vec![
            image("shared", "h2", "p", ImageState::Deleting),
            image("local", "h2", "l", ImageState::Deleting),
        ]);
        assert!(names(&plan("h1", &s, 5).delete).is_empty());
        s.hosts.get_mut("h2").expect("h2").health = HostHealth::Dead;
        assert_eq!(names(&plan("h1", &s, 5).delete), ["shared"]);
        s.hosts.remove("h2");
        assert_eq!(names(&plan("h1", &s, 5).delete), ["shared"]);
    }

    /// A host deletes its copies of images being deleted, and copies a former leader
    /// began; the image's own volume waits until no copy is left.
    #[test]
    fn copies_go_first_and_abandoned_copies_go_too() {
        let ready = ImageState::Ready {
            format: ImageFormat::Raw,
            virtual_bytes: 1,
            file_bytes: 1,
            sha256: String::new(),
        };
        let mut s = state(vec![
            image("gone", "h1", "l", ImageState::Deleting),
            image("old-copy", "h1", "l", ready.clone()),
            image("new-copy", "h1", "l", ready.clone()),
            image("kept", "h1", "l", ready),
        ]);
        let copies = |c: ImageCopy| [("h2".to_string(), c)].into();
        s.images.get_mut("gone").unwrap().copies = copies(ImageCopy::Ready);
        s.images.get_mut("old-copy").unwrap().copies = copies(ImageCopy::Copying { term: 4 });
        s.images.get_mut("new-copy").unwrap().copies = copies(ImageCopy::Copying { term: 5 });
        s.images.get_mut("kept").unwrap().copies = copies(ImageCopy::Ready);
        assert!(
            names(&plan("h1", &s, 5).delete).is_empty(),
            "the image's own volume waits for its copy"
        );
        assert_eq!(
            names(&plan("h2", &s, 5).delete_copies),
            ["gone", "old-copy"]
        );
        s.images.get_mut("gone").unwrap().copies.clear();
        assert_eq!(names(&plan("h1", &s, 5).delete), ["gone"]);
    }
}
