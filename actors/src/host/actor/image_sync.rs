//! The host actor's part in images: at every heartbeat, abandon imports of a former
//! leader and delete the volumes of images being deleted and this host's copies that must
//! go (`images::plan`), then record each deletion so the image (or copy) is forgotten.

use actix::prelude::*;
use drover_proto::agent::v1::DeleteVolumeRequest;
use drover_raft::Command;

use super::HostActor;
use crate::agents::{deadline, QUICK_CALL};
use crate::host::images;

impl HostActor {
    pub(super) fn sync_images(&mut self, ctx: &mut Context<Self>) {
        let plan = self
            .cx
            .node
            .view()
            .read(|d| images::plan(&self.name, &d.state, self.cx.term));
        for (name, volume) in plan.abandon {
            tracing::info!(host = %self.name, image = %name, term = self.cx.term, "abandoning an import a former leader began");
            let cmd = Command::DeleteImage {
                name,
                volume: Some(volume),
            };
            self.write(ctx, cmd, "cannot abandon an image import");
        }
        for (image, pool, volume) in plan.delete {
            if self.volume_calls.insert(volume.clone()) {
                self.delete_image_volume(image, pool, volume, false, ctx);
            }
        }
        for (image, pool, volume) in plan.delete_copies {
            if self.volume_calls.insert(volume.clone()) {
                self.delete_image_volume(image, pool, volume, true, ctx);
            }
        }
    }

    /// Deletes an image's volume on this host: its own (`copy` false) or this host's copy
    /// of it; then records that.
    fn delete_image_volume(
        &mut self,
        image: String,
        pool: String,
        volume: String,
        copy: bool,
        ctx: &mut Context<Self>,
    ) {
        let req = DeleteVolumeRequest {
            pool,
            volume: volume.clone(),
            term: self.cx.term,
        };
        self.call_host(
            ctx,
            move |mut c| async move { c.delete_volume(deadline(req, QUICK_CALL)).await },
            move |act, ctx, res| {
                act.volume_calls.remove(&volume);
                match res {
                    Ok(_) => {
                        tracing::info!(host = %act.name, image = %image, volume = %volume, copy, "image volume deleted");
                        let cmd = if copy {
                            Command::ImageCopyRemoved {
                                name: image,
                                volume,
                                host: act.name.clone(),
                            }
                        } else {
                            Command::ImageRemoved {
                                name: image,
                                volume,
                            }
                        };
                        act.write(ctx, cmd, "cannot record an image's removal");
                    }
                    // Tried again at the next heartbeat; the image shows "deleting" meanwhile.
                    Err(s) => {
                        tracing::warn!(host = %act.name, image = %image, error = %s.message(), "cannot delete an image's volume")
                    }
                }
            },
        );
    }
}
