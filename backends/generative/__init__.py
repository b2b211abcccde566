"""Generative models: the latent-diffusion pipeline over any diffusers UNet, Stable Diffusion, h-space, directions, inversion, region prompts."""
