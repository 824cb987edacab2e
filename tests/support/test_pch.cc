// The owner of the tests' precompiled header (MEMBRANE_PCH in CMakeLists.txt):
// CMake needs a source in the target that builds the PCH every test reuses.
// It compiles to nothing.
