//! `drover image import|list|get|delete`.

use drover_proto::v1 as pb;
use serde_json::{json, Value};

use super::commands::{client, json, read, Printed, Target};
use super::output::{bytes, table, Format};
use super::{ImageCmd, ReadOpts};

fn image_json(i: &pb::Image) -> Value {
    json!({
        "name": i.name,
        "pool": i.pool,
        "volume": i.volume,
        "host": i.host,
        "state": i.state,
        "format": i.format,
        "virtual_bytes": i.virtual_bytes,
        "file_bytes": i.file_bytes,
        "sha256": i.sha256,
        "copies": i.copies,
    })
}

fn image_rows(images: &[pb::Image]) -> String {
    table(
        &["NAME", "STATE", "FORMAT", "SIZE", "FILE", "POOL", "HOST"],
        images
            .iter()
            .map(|i| {
                let ready = i.state == "ready";
                let size = |n| if ready { bytes(n) } else { "-".into() };
                vec![
                    i.name.clone(),
                    i.state.clone(),
                    if ready { i.format.clone() } else { "-".into() },
                    size(i.virtual_bytes),
                    size(i.file_bytes),
                    i.pool.clone(),
                    i.host.clone(),
                ]
            })
            .collect(),
    )
}

fn show(format: Format, i: &pb::Image) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => json(&image_json(i))?,
        Format::Table => {
            let mut copies: Vec<String> =
                i.copies.iter().map(|(h, s)| format!("{h} ({s})")).collect();
            copies.sort();
            format!(
                "{}\n\nvolume {} in pool {}\nsha256 {}\ncopies {}",
                image_rows(std::slice::from_ref(i)),
                i.volume,
                i.pool,
                if i.sha256.is_empty() { "-" } else { &i.sha256 },
                if copies.is_empty() {
                    "-".to_string()
                } else {
                    copies.join(", ")
                }
            )
        }
    })
}

/// Runs a `drover image …` command.
pub async fn image(target: &Target, format: Format, cmd: ImageCmd) -> anyhow::Result<Printed> {
    let c = client(target)?;
    match cmd {
        ImageCmd::Import {
            name,
            file,
            url,
            pool,
        } => {
            let image = match (file, url) {
                (Some(file), _) => c.import_image(&name, &pool, &file).await?,
                (None, Some(url)) => c.import_image_url(&name, &pool, &url).await?,
                (None, None) => anyhow::bail!("give --file or --url"),
            };
            Ok(show(format, &image)?.into())
        }
        ImageCmd::List {
            read: ReadOpts { stale },
        } => read(c.images(stale).await?, stale, |images| {
            Ok(match format {
                Format::Json => json(&images.iter().map(image_json).collect())?,
                Format::Table => image_rows(images),
            })
        }),
        ImageCmd::Get {
            name,
            read: ReadOpts { stale },
        } => read(c.image(&name, stale).await?, stale, |i| show(format, i)),
        ImageCmd::Delete { name } => {
            let image = c.delete_image(&name).await?;
            Ok(match format {
                Format::Json => json(&image_json(&image))?,
                Format::Table => format!(
                    "deleting image {name}: host {} removes volume {}",
                    image.host, image.volume
                ),
            }
            .into())
        }
    }
}
