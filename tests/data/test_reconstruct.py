"""VAE reconstruction CLI on a tiny release-layout VAE whose decoder is a known closed field."""
import json

import torch
import trimesh

from backend.data.prepare import PrepareOptions, prepare_mesh, write_npz
from backend.data.reconstruct import main
from backend.data.watertight import WatertightOptions
from backend.geometry.vae import ShapeVAE
from tests.geometry.tiny import TINY_VAE, make_blob_field, on_blob_surface


def test_reconstruct_cli_writes_the_decoded_surface(tmp_path, capsys):
    torch.manual_seed(0)
    vae = ShapeVAE(**TINY_VAE)
    make_blob_field(vae)  # a closed blob near cos x + cos y + cos z = 2.75, moved a little by the latents
    vae.save_release(tmp_path / "model" / "vae")
    box = trimesh.creation.box((1.0, 0.6, 0.8))
    o = PrepareOptions(watertight=WatertightOptions(resolution=24, views=6, view_resolution=48),
                       num_surface=500, num_sharp=500, num_near=100, num_volume=100)
    write_npz(tmp_path / "box.npz", prepare_mesh(box.vertices, box.faces, o).arrays)

    out = tmp_path / "rec.ply"
    code = main([str(tmp_path / "box.npz"), str(out), "--vae", str(tmp_path / "model"), "--subfolder", "vae",
                 "--num-points", "64", "--resolution", "64", "--device", "cpu", "--metrics"])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out.splitlines()[0])
    assert set(metrics) >= {"input_to_reconstruction_mean", "reconstruction_to_input_mean"}
    mesh = trimesh.load(out, process=True)
    assert mesh.is_watertight
    assert on_blob_surface(mesh.vertices)  # on the decoder's zero level


def test_reconstruct_cli_missing_input(tmp_path, capsys):
    assert main([str(tmp_path / "none.npz"), str(tmp_path / "x.ply")]) == 3
    assert "input_not_found" in capsys.readouterr().err
