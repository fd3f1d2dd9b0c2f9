"""Training data -> LoRA (PEFT) fine-tune -> adapter folder with its card."""
