//! Rendering: annotations drawn onto frames, and the live window that shows them.

pub mod overlay;
pub mod window;

pub use overlay::{Overlay, Readout};
pub use window::{PreviewWindow, WindowError, WindowEvent};
