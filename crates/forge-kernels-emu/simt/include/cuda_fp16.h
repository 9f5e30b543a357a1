// Stands in for CUDA's header under host emulation: simt.h (force-included) defines the types.
#pragma once
