"""bpy-free logic of the add-on: testable with plain Python."""
