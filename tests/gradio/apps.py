"""Real Gradio apps for the gradio engine's tests and bench: small,
deterministic image functions (no model), in the shapes rig owners run.

    python3 apps.py SHAPE PORT

SHAPE:
  interface  gr.Interface(prompt, width, height, seed) -> one PNG image,
             reporting progress with gr.Progress; a prompt containing
             "slow" takes 60 steps of 0.25 s (long enough to stop the app
             mid-job); a prompt containing "fail" raises gr.Error.
  narrow     the interface app with a queue of one waiting job and one
             running at a time (a second waiting job is refused: "queue
             full"); a prompt containing "hold" takes 24 steps of 0.25 s,
             one containing "brief" 8.
  blocks     gr.Blocks with named endpoints: /txt2img (prompt,
             negative_prompt, steps, seed) -> a gallery of two images;
             /img2img (image, prompt, strength) -> the input inverted,
             as one image; /styled (prompt, style) -> an image, where
             `style` is required and no task field feeds it.
"""

import hashlib
import sys
import time

import gradio as gr
from PIL import Image, ImageOps


def pattern(prompt, seed, width, height):
    """A w x h image whose pixels depend on the prompt and seed only."""
    d = hashlib.sha256(f"{prompt}|{int(seed)}".encode()).digest()
    w, h = int(width), int(height)
    img = Image.new("RGB", (w, h))
    img.putdata([((d[0] + x) % 256, (d[1] + y) % 256, d[2]) for y in range(h) for x in range(w)])
    return img


def interface():
    def draw(prompt, width, height, seed, progress=gr.Progress()):
        if "fail" in prompt:
            raise gr.Error("this app refuses prompts that say fail")
        steps, pause = {"slow": (60, 0.25), "hold": (24, 0.25), "brief": (8, 0.25)}.get(
            next((w for w in ("slow", "hold", "brief") if w in prompt), ""), (3, 0.01)
        )
        for _ in progress.tqdm(range(steps), desc="drawing"):
            time.sleep(pause)
        return pattern(prompt, seed, width, height)

    return gr.Interface(
        draw,
        [
            gr.Textbox(label="Prompt"),
            gr.Number(label="Width", value=64, precision=0),
            gr.Number(label="Height", value=64, precision=0),
            gr.Number(label="Seed", value=0, precision=0),
        ],
        gr.Image(type="pil", format="png"),
        api_name="generate",
    )


def blocks():
    with gr.Blocks() as demo:
        prompt = gr.Textbox(label="Prompt")
        negative = gr.Textbox(label="Negative prompt", value="")
        steps = gr.Slider(1, 50, value=4, step=1, label="Steps")
        seed = gr.Number(label="Seed", value=1, precision=0)
        gallery = gr.Gallery(label="Results", format="png")

        def txt2img(prompt, negative_prompt, steps, seed):
            # Two candidates, as pipelines that batch do; 96 x 80 whatever
            # the job asked (the worker resizes).
            return [pattern(prompt + negative_prompt, seed + i, 96, 80) for i in range(2)]

        gr.Button("Generate").click(
            txt2img, [prompt, negative, steps, seed], gallery, api_name="txt2img"
        )

        image = gr.Image(type="pil", label="Input")
        strength = gr.Slider(0, 1, value=0.5, label="Strength")
        out = gr.Image(type="pil", format="png", label="Output")

        def img2img(image, prompt, strength):
            return ImageOps.invert(image.convert("RGB"))

        gr.Button("Edit").click(img2img, [image, prompt, strength], out, api_name="img2img")

        style = gr.Textbox(label="Style")

        def styled(prompt, style):
            return pattern(prompt + style, 0, 32, 32)

        gr.Button("Styled").click(styled, [prompt, style], out, api_name="styled")
    return demo


if __name__ == "__main__":
    shape, port = sys.argv[1], int(sys.argv[2])
    app = {"interface": interface, "narrow": interface, "blocks": blocks}[shape]()
    if shape == "narrow":
        app.queue(max_size=1, default_concurrency_limit=1)
    else:
        app.queue()
    app.launch(server_name="127.0.0.1", server_port=port, show_error=True, quiet=True)
