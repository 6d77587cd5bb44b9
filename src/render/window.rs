//! The live window (minifb, X11): shows annotated frames scaled to the window and reports the
//! keys: Esc or q quits, r starts/stops recording, s saves a snapshot, l shows/hides landmarks.

use image::RgbImage;
use minifb::{Key, KeyRepeat, ScaleMode, Window, WindowOptions};

/// Errors of the live window.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// There is no display to open a window on.
    #[error("cannot open a window: no display ({0}); run with --headless to work without one")]
    NoDisplay(String),
    /// The window system refused the window or a frame.
    #[error("window error: {0}")]
    Window(String),
}

/// What the user asked for through the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowEvent {
    /// Esc, q, or the window was closed.
    Quit,
    /// r: start or stop recording.
    ToggleRecording,
    /// s: save the current annotated frame as PNG.
    Snapshot,
    /// l: show or hide the faces' landmarks.
    ToggleLandmarks,
}

pub struct PreviewWindow {
    window: Window,
    /// 0RGB pixels, as minifb wants them.
    buffer: Vec<u32>,
}

/// Fails early, before any work starts, when there is no display to open a window on.
pub fn check_display() -> Result<(), WindowError> {
    if std::env::var_os("DISPLAY").is_none_or(|d| d.is_empty()) {
        return Err(WindowError::NoDisplay("DISPLAY is not set".into()));
    }
    Ok(())
}

impl PreviewWindow {
    /// Opens a window sized to the frames.
    pub fn open(title: &str, width: u32, height: u32) -> Result<Self, WindowError> {
        check_display()?;
        let options = WindowOptions {
            resize: true,
            scale_mode: ScaleMode::AspectRatioStretch,
            ..WindowOptions::default()
        };
        let mut window = Window::new(title, width as usize, height as usize, options)
            .map_err(|e| WindowError::NoDisplay(e.to_string()))?;
        // Frames arrive at the source's pace; minifb must not add its own sleep.
        window.set_target_fps(0);
        Ok(Self {
            window,
            buffer: Vec::new(),
        })
    }

    /// Shows `frame` and returns the keys pressed since the last call.
    pub fn show(&mut self, frame: &RgbImage) -> Result<Vec<WindowEvent>, WindowError> {
        self.buffer.clear();
        self.buffer.extend(
            frame
                .pixels()
                .map(|p| u32::from_be_bytes([0, p[0], p[1], p[2]])),
        );
        self.window
            .update_with_buffer(
                &self.buffer,
                frame.width() as usize,
                frame.height() as usize,
            )
            .map_err(|e| WindowError::Window(e.to_string()))?;
        Ok(self.events())
    }

    /// Keeps the window responsive while no frame arrives; returns the keys pressed.
    pub fn poll(&mut self) -> Vec<WindowEvent> {
        self.window.update();
        self.events()
    }

    fn events(&self) -> Vec<WindowEvent> {
        let mut events: Vec<WindowEvent> = self
            .window
            .get_keys_pressed(KeyRepeat::No)
            .into_iter()
            .filter_map(|key| match key {
                Key::Escape | Key::Q => Some(WindowEvent::Quit),
                Key::R => Some(WindowEvent::ToggleRecording),
                Key::S => Some(WindowEvent::Snapshot),
                Key::L => Some(WindowEvent::ToggleLandmarks),
                _ => None,
            })
            .collect();
        if !self.window.is_open() {
            events.push(WindowEvent::Quit);
        }
        events
    }
}
