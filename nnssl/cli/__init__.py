"""Console scripts: one thin module per ``nnssl_<verb>``."""
import warnings

# timm (imported through dynamic-network-architectures) decorates with torch.jit.interface at import time, which
# torch 2.14 deprecates; the warning says nothing about the user's run, so keep it off every CLI's first lines.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.interface.*", category=FutureWarning)
