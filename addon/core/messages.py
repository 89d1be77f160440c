"""Every backend error code as a sentence an artist can act on.

The backend's own message names the culprit (which file, which setting); the text here says what
to do about it. Both are shown, so nobody is left with a generic "something went wrong".
"""
from __future__ import annotations

ADVICE: dict[str, str] = {
    "invalid_request": "The add-on and the backend disagree about a request. Install matching versions of both.",
    "invalid_setting": "A generation setting was refused. Reset it to its default in the panel.",
    "input_not_found": "The reference image was not found. Pick the image again.",
    "input_unreadable": "The reference image could not be read: it is damaged or not an image. "
                        "Re-save it as PNG or JPEG.",
    "input_too_large": "The reference image is too large (over 8192 pixels a side). Scale it down.",
    "empty_foreground": "No object was found in the image. Use a picture with one clear subject, "
                        "ideally on a transparent or plain background.",
    "foreground_fills_frame": "The object fills the whole image, so it cannot be cut out. Leave a margin "
                              "around it, or use a PNG with a transparent background.",
    "output_unwritable": "The result cannot be written. Choose a writable output folder in the add-on preferences.",
    "engine_unavailable": "This engine cannot run here (no suitable GPU, or no weights). Choose the CPU preview "
                          "plan, or press Check in the add-on preferences to see what the backend found.",
    "weights_not_found": "The model weights were not found. Set the weights folder or hub id in the add-on "
                         "preferences, or download them with `python -m backend download`.",
    "out_of_memory": "The GPU ran out of memory. Use the single-GPU plan (it offloads idle models), or lower "
                     "the texture resolution, view resolution or face budget.",
    "cancelled": "The job was cancelled.",
    "backend_unavailable": "The backend is not running or stopped answering. Check the interpreter in the add-on "
                           "preferences, then press Start in the panel.",
    "batch_incomplete": "Some inputs of the batch failed; each failure is listed with its reason, the others were written.",
    "disk_full": "There is not enough free disk space for this. Free some space or choose another folder, then try again.",
    "background_unclear": "The object could not be cut out of its background. Use a PNG with a transparent "
                          "background or a plainer backdrop, or download the background model "
                          "(`python -m backend download`).",
    "unauthorized": "The server refused the access token. Enter the token its administrator gave you in the "
                    "add-on preferences (Backend: Remote server).",
    "queue_full": "The server is busy with other artists' jobs. Try again in a little while.",
    "job_not_found": "The server no longer has this job (its results expire). Generate again.",
    "job_lost": "The server restarted while the job was waiting or running. Generate again.",
    "server_unreachable": "The server cannot be reached. Check its URL in the add-on preferences, your network, "
                          "and that the server is running (`python -m backend serve --http HOST:PORT`).",
    "server_timeout": "The server did not answer in time. It may be overloaded or the network slow; try again.",
    "internal_error": "The backend hit an unexpected error. The backend log in the add-on preferences has details.",
}

OFFLINE_HINT = " Blender's online access is off, so nothing is downloaded: allow it, or point to a local folder."


def explain(code: str, detail: str = "", online: bool = True) -> str:
    """The advice for `code`, then the backend's detail (which names the file or setting)."""
    text = ADVICE.get(code, ADVICE["internal_error"])
    if code == "weights_not_found" and not online:
        text += OFFLINE_HINT
    detail = detail.strip()
    return f"{text} ({detail})" if detail else text
