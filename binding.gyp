# node-gyp's entry point. coltrast is built by CMake (CMakeLists.txt, via cmake-js); this file exists
# so that tools that drive node-gyp -- `node-gyp rebuild`, node-gyp-build's install fallback and
# prebuildify -- build the same addon: its one action runs scripts/build-native.js, which writes
# build/Release/coltrast.node. It lists no sources on purpose: CMakeLists.txt holds that list.
{
  "targets": [
    {
      "target_name": "coltrast",
      "type": "none",
      "actions": [
        {
          "action_name": "build_with_cmake_js",
          "inputs": ["CMakeLists.txt"],
          "outputs": ["<(module_root_dir)/build/Release/coltrast.node"],
          "action": ["node", "<(module_root_dir)/scripts/build-native.js"]
        }
      ]
    }
  ]
}
