//! The installation's images, as the engine's store holds them: listed by anyone, built,
//! pulled, pushed, imported and removed by the local admin (the API lets no one else
//! call these). The image library does the work; store work runs off the async threads.

use std::path::PathBuf;
use std::sync::Arc;

use hangar_image::{BuildOptions, RegistryOptions};
use hangar_store::{Digest, GcReport, ImageName, ImageRecord};

use crate::{Engine, EngineError, Result};

/// Receives an image operation's progress, one line at a time, from any thread.
pub type Lines = Arc<dyn Fn(&str) + Send + Sync>;

impl Engine {
    /// Every image in the store, by name.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        Ok(self.store.images()?)
    }

    /// Builds a Debian image (mmdebstrap) and names it `name`.
    pub async fn build_image(
        &self,
        name: ImageName,
        opts: BuildOptions,
        lines: Lines,
    ) -> Result<ImageRecord> {
        let store = self.store.clone();
        self.blocking("build the image in", move || {
            hangar_image::build_debian(&store, &name, &opts, &*lines)
        })
        .await
    }

    /// Pulls `reference` into the store, named `name` (else as the reference says).
    pub async fn pull_image(
        &self,
        reference: &str,
        name: Option<&ImageName>,
        opts: &RegistryOptions,
        lines: hangar_image::Progress<'_>,
    ) -> Result<ImageRecord> {
        Ok(hangar_image::pull(&self.store, reference, name, opts, lines).await?)
    }

    /// Pushes image `name` to `reference`; the digest of its manifest.
    pub async fn push_image(
        &self,
        name: &str,
        reference: &str,
        opts: &RegistryOptions,
        lines: hangar_image::Progress<'_>,
    ) -> Result<Digest> {
        Ok(hangar_image::push(&self.store, name, reference, opts, lines).await?)
    }

    /// Imports an OCI layout directory or tarball, or a `docker save` tarball, at `path`
    /// on this machine.
    pub async fn import_image(
        &self,
        path: PathBuf,
        name: Option<ImageName>,
        lines: Lines,
    ) -> Result<ImageRecord> {
        let store = self.store.clone();
        self.blocking("import the image into", move || {
            hangar_image::import(&store, &path, name.as_ref(), &*lines)
        })
        .await
    }

    /// Removes image `name` and whatever only it used.
    pub async fn remove_image(&self, name: String) -> Result<GcReport> {
        let store = self.store.clone();
        self.blocking("remove the image from", move || {
            store
                .remove_image(&name)
                .map_err(hangar_image::ImageError::from)
        })
        .await
    }

    /// Runs image work on a blocking thread; `action` reads before the store's path.
    async fn blocking<T: Send + 'static>(
        &self,
        action: &'static str,
        f: impl FnOnce() -> hangar_image::Result<T> + Send + 'static,
    ) -> Result<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| EngineError::Io {
                action,
                path: self.store.root().to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(EngineError::from)
    }
}
