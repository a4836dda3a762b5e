"""The eCLIP task's fixed code: Ukiyo-eVG reader, synthetic generator, preparation and run-time I/O.

Copied into a research repository as is; modules import each other relatively and need only numpy, torch,
pillow and tokenizers. Nothing is imported here so that ``import eclip`` stays cheap.
"""
