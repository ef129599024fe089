"""A tiny registered GAN for trainer tests: no batch-dependent layers (so DDP with B per rank equals one process
with 2B), optional input noise (exercises the RNG state in resume) and scheduled NaN losses (NaN recovery)."""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from toonlab.config import ranged
from toonlab.models.base import Model, Phase, Step, register


@dataclass
class TinyGANConfig:
    width: int = ranged(4, ge=1)
    init_epochs: int = 1
    adv_epochs: int = 2
    lr_init: float = 1e-2
    lr_g: float = 1e-2
    lr_d: float = 1e-2
    betas: tuple[float, float] = (0.5, 0.999)
    noise: float = 0.1  # std of noise added to G's input in the G step (draws from the global torch RNG)
    memory_weight: float = 0.1  # weight of the D term that reads the fakes' running mean colour (model state
    #                             outside the networks, restored on resume); 0 where batches are split differently
    nan_calls: list[int] = field(default_factory=list)  # G-step calls (0-based) whose loss is NaN
    perceptual: str = "random"  # unused; mirrors the real models' field


@register("_tiny_train")
class TinyGAN(Model):
    Config = TinyGANConfig
    default_size = 16

    def __init__(self, cfg):
        super().__init__(cfg)
        w = cfg.width
        self.networks["G"] = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.LeakyReLU(0.2),
                                           nn.Conv2d(w, 3, 1), nn.Tanh())
        self.networks["D"] = nn.Sequential(nn.Conv2d(3, w, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                                           nn.Conv2d(w, 1, 3, padding=1))
        self.g_calls = 0
        self.memory = torch.zeros(3)  # running mean colour of the fakes: model state outside the networks
        self.epochs_seen: list[int] = []

    def phases(self):
        c = self.cfg
        return (Phase("init", c.init_epochs, (Step("init", ("G",), c.lr_init, c.betas),)),
                Phase("adv", c.adv_epochs, (Step("D", ("D",), c.lr_d, c.betas), Step("G", ("G",), c.lr_g, c.betas))))

    def set_epoch(self, epoch):
        self.epochs_seen.append(epoch)

    def training_step(self, step, batch):
        G, D = self.networks["G"], self.networks["D"]
        photo, cartoon = batch["photo"], batch["cartoon"]
        if step == "init":
            loss = F.l1_loss(G(photo), photo)
            return {"loss": loss, "con": loss.detach()}
        if step == "D":
            with torch.no_grad():
                fake = G(photo)
            real, fk = D(cartoon), D(fake)
            loss = F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fk, torch.zeros_like(fk))
            loss = loss + self.cfg.memory_weight * (fk.mean() - self.memory.mean()) ** 2
            self.memory = 0.5 * self.memory.to(fake.device) + 0.5 * fake.mean(dim=(0, 2, 3))
            return {"loss": loss}
        noisy = photo + self.cfg.noise * torch.randn_like(photo)
        fake = G(noisy)
        adv = D(fake)
        loss = F.mse_loss(adv, torch.ones_like(adv)) + 10 * F.l1_loss(fake, photo)
        if self.g_calls in self.cfg.nan_calls:
            loss = loss * float("nan")
        self.g_calls += 1
        return {"loss": loss, "adv": F.mse_loss(adv, torch.ones_like(adv)).detach()}

    def extra_training_state(self):
        return {"memory": self.memory}

    def load_extra_training_state(self, state):
        self.memory = state["memory"].clone()

    def translator(self):
        return self.networks["G"]
