"""regstudy: a small library behind the notebooks that reproduce
"Vision Transformers Need Registers" (Darcet et al., ICLR 2024) at Fashion-MNIST scale.

One module per job: ``config`` (params.yaml, validated), ``data`` and ``scenes`` (inputs),
``model`` (timm ViT + token groups + attention), ``train`` (the training loop), ``checkpoint``,
``norms`` (outlier tokens), ``probes``, ``lost``, ``plotting``, ``report``.
"""

__version__ = "0.1.0"
