//! What one host must do about images, a pure reading of the state: abandon imports that a
//! former leader began (their stream died with it), and delete the volumes of images being
//! deleted that this host received. The host actor carries it out (`DeleteImage`,
//! DeleteVolume, `ImageRemoved`).

use std::collections::BTreeMap;

use drover_raft::model::{Image, ImageState};

/// What to do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ImagePlan {
    /// `(image, volume)` of imports begun in an earlier term: to be marked deleting.
    pub abandon: Vec<(String, String)>,
    /// `(image, pool, volume)` to delete on the host, then forget.
    pub delete: Vec<(String, String, String)>,
}

/// `term`: the leader's own. An import of this term may still be streaming through this
/// leader; one of an earlier term cannot be.
pub fn plan(host: &str, images: &BTreeMap<String, Image>, term: u64) -> ImagePlan {
    let mut out = ImagePlan::default();
    for image in images.values().filter(|i| i.host == host) {
        match image.state {
            ImageState::Importing { term: began } if began < term => {
                out.abandon.push((image.name.clone(), image.volume.clone()))
            }
            ImageState::Deleting => {
                out.delete
                    .push((image.name.clone(), image.pool.clone(), image.volume.clone()))
            }
            ImageState::Importing { .. } | ImageState::Ready { .. } => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use drover_raft::model::ImageFormat;

    use super::*;

    fn image(name: &str, host: &str, state: ImageState) -> (String, Image) {
        let i = Image {
            name: name.into(),
            pool: "p".into(),
            volume: format!("image-{name}-1"),
            host: host.into(),
            state,
        };
        (name.into(), i)
    }

    #[test]
    fn old_imports_are_abandoned_and_deleting_images_deleted_by_their_host() {
        let ready = ImageState::Ready {
            format: ImageFormat::Raw,
            virtual_bytes: 1,
            file_bytes: 1,
            sha256: String::new(),
        };
        let images = BTreeMap::from([
            image("old", "h1", ImageState::Importing { term: 4 }),
            image("now", "h1", ImageState::Importing { term: 5 }),
            image("gone", "h1", ImageState::Deleting),
            image("kept", "h1", ready),
            image("theirs", "h2", ImageState::Deleting),
        ]);
        let p = plan("h1", &images, 5);
        assert_eq!(p.abandon, [("old".to_string(), "image-old-1".to_string())]);
        assert_eq!(
            p.delete,
            [(
                "gone".to_string(),
                "p".to_string(),
                "image-gone-1".to_string()
            )]
        );
    }
}
