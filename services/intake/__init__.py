"""The intake service: the front door for providers (CyberTipline reporting API) and the public."""
