"""Models and fine-tuning: base models from the embedded GGUF, the sentence encoder, LoRA supervised fine-tuning."""
